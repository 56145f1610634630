//! Tidy checks run as ordinary tests: the dependency direction in `ARCHITECTURE.md` holds,
//! no crate has an import circle between its modules, every crate has its doc header, and
//! every number in README's "Measured" table is one that MEASUREMENTS.md records, and
//! ARCHITECTURE.md stays short.

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use crate::project_root;

    /// Workspace crates each crate may depend on (normal dependencies), as ARCHITECTURE.md
    /// draws it. A change here is a change of architecture: update the document too.
    const ALLOWED: &[(&str, &[&str])] = &[
        ("recall-core", &[]),
        ("recall-data", &["recall-core"]),
        ("recall-features", &["recall-core"]),
        (
            "recall-engine",
            &["recall-core", "recall-features", "recall-data"],
        ),
        ("recall-sampling", &["recall-core"]),
        ("recall-eval", &["recall-core"]),
        (
            "recall-models",
            &["recall-core", "recall-sampling", "recall-eval"],
        ),
        (
            "recall-export",
            &["recall-core", "recall-models", "recall-eval"],
        ),
        ("recall-fetch", &["recall-core", "recall-data"]),
        (
            "recall-pipeline",
            &[
                "recall-core",
                "recall-data",
                "recall-features",
                "recall-engine",
                "recall-models",
                "recall-eval",
                "recall-export",
            ],
        ),
    ];

    fn workspace_deps(manifest: &toml::Table) -> BTreeSet<String> {
        manifest
            .get("dependencies")
            .and_then(|d| d.as_table())
            .map(|d| {
                d.keys()
                    .filter(|k| k.starts_with("recall-"))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn dependencies_point_one_way() {
        let crates = project_root().join("crates");
        let mut seen = 0;
        for entry in std::fs::read_dir(&crates).unwrap() {
            let dir = entry.unwrap().path();
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
            let manifest: toml::Table = toml::from_str(&text).unwrap();
            let package = manifest["package"]["name"].as_str().unwrap();
            assert_eq!(
                package, name,
                "crate folders are named exactly like their crate"
            );
            let allowed = ALLOWED
                .iter()
                .find(|(c, _)| *c == name)
                .unwrap_or_else(|| panic!("{name} is not in ALLOWED: add it and ARCHITECTURE.md"))
                .1;
            for dep in workspace_deps(&manifest) {
                assert!(
                    allowed.contains(&dep.as_str()),
                    "{name} depends on {dep}, which ARCHITECTURE.md does not allow"
                );
            }
            let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
            assert!(
                lib.starts_with("//!"),
                "{name}/src/lib.rs needs a //! doc header"
            );
            seen += 1;
        }
        assert_eq!(seen, ALLOWED.len());
    }

    /// The numbers in `text`: digit runs joined by single `,` `.` or `:` between digits
    /// (`994,433`, `0.4767`, `5:18`), as written.
    fn numbers(text: &str) -> BTreeSet<String> {
        let chars: Vec<char> = text.chars().collect();
        let mut out = BTreeSet::new();
        let mut i = 0;
        while i < chars.len() {
            if !chars[i].is_ascii_digit() {
                i += 1;
                continue;
            }
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_digit()
                    || (matches!(chars[i], ',' | '.' | ':')
                        && chars.get(i + 1).is_some_and(char::is_ascii_digit)
                        && i > start))
            {
                i += 1;
            }
            out.insert(chars[start..i].iter().collect());
        }
        out
    }

    /// The rows of the table under the `## Measured` heading of a README.
    fn measured_table(readme: &str) -> Vec<&str> {
        readme
            .split("\n## Measured")
            .nth(1)
            .map(|section| {
                section
                    .lines()
                    .skip_while(|l| !l.starts_with('|'))
                    .take_while(|l| l.starts_with('|'))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Numbers of the README's "Measured" table that MEASUREMENTS.md does not contain.
    fn untraced(readme: &str, measurements: &str) -> Vec<(String, String)> {
        let recorded = numbers(measurements);
        let mut out = Vec::new();
        for row in measured_table(readme) {
            for n in numbers(row) {
                if !recorded.contains(&n) {
                    out.push((n, row.chars().take(90).collect()));
                }
            }
        }
        out
    }

    /// ARCHITECTURE.md stays a map a newcomer reads in one sitting: past this many lines it
    /// has turned into a second MEASUREMENTS.md or a copy of the code's docs.
    const ARCHITECTURE_MAX_LINES: usize = 250;

    #[test]
    fn architecture_stays_short() {
        let text = std::fs::read_to_string(project_root().join("ARCHITECTURE.md")).unwrap();
        let lines = text.lines().count();
        assert!(
            lines <= ARCHITECTURE_MAX_LINES,
            "ARCHITECTURE.md has {lines} lines, more than {ARCHITECTURE_MAX_LINES}: move detail into the crates' docs or MEASUREMENTS.md"
        );
    }

    /// A README claim traces to a run recorded in MEASUREMENTS.md: every number of the
    /// "Measured" table appears there, as written.
    #[test]
    fn every_measured_number_in_the_readme_is_recorded_in_measurements() {
        let root = project_root();
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let measurements = std::fs::read_to_string(root.join("MEASUREMENTS.md")).unwrap();
        assert!(
            measured_table(&readme).len() > 3,
            "README.md has no \"## Measured\" table"
        );
        let missing = untraced(&readme, &measurements);
        assert!(
            missing.is_empty(),
            "README numbers MEASUREMENTS.md does not record (add the run, or correct the README): {missing:#?}"
        );
    }

    #[test]
    fn the_claims_check_catches_a_number_measurements_lacks() {
        let readme = "# x\n\n## Measured\n\n| | |\n|---|---|\n| index | 7,868 queries/s (exact: 1,005/s), 0.62 GB |\n\n## Next\n| 99 |\n";
        let measurements = "index: 8,702 queries/s, exact 965/s, 0.62 GB; 1,005,000 rows";
        let missing: Vec<String> = untraced(readme, measurements)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(missing, ["1,005", "7,868"]);
        assert!(numbers("5:18 and 0.87-1.00 s, 1,000,209.").contains("1,000,209"));
        assert!(numbers("5:18 and 0.87-1.00 s").contains("5:18"));
    }

    /// A crate's module files by module path (`lib.rs` and `main.rs` are the root `[]`,
    /// `a/mod.rs` and `a.rs` are `[a]`).
    fn module_files(
        src: &std::path::Path,
    ) -> std::collections::BTreeMap<Vec<String>, std::path::PathBuf> {
        let mut out = std::collections::BTreeMap::new();
        let mut stack = vec![src.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                let rel = path.strip_prefix(src).unwrap();
                let mut parts: Vec<String> = rel
                    .iter()
                    .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
                    .collect();
                if matches!(
                    parts.last().map(String::as_str),
                    Some("mod" | "lib" | "main")
                ) {
                    parts.pop();
                }
                out.insert(parts, path);
            }
        }
        out
    }

    /// The module paths a file's code names (its `#[cfg(test)]` part left out): `crate::`
    /// paths (braced groups expanded), `super::` paths, and paths through the child modules it
    /// declares.
    fn named_paths(text: &str, own: &[String]) -> Vec<Vec<String>> {
        // Code only: the test module (last in a file) and comments, doc links included, are
        // left out.
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or("")
            .lines()
            .map(|l| match l.find("//") {
                Some(at) if l[..at].trim().is_empty() || l[..at].ends_with(' ') => &l[..at],
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let code = code.as_str();
        let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
        // Segments and groups after a prefix: `a::b::{c, d::e}` -> [a,b,c], [a,b,d,e].
        fn expand(rest: &str, base: Vec<String>, out: &mut Vec<Vec<String>>) {
            let mut path = base;
            let mut s = rest;
            loop {
                s = s.trim_start();
                if let Some(group) = s.strip_prefix('{') {
                    let mut depth = 0;
                    let mut start = 0;
                    for (i, c) in group.char_indices() {
                        match c {
                            '{' => depth += 1,
                            '}' if depth == 0 => {
                                expand(&group[start..i], path.clone(), out);
                                return;
                            }
                            '}' => depth -= 1,
                            ',' if depth == 0 => {
                                expand(&group[start..i], path.clone(), out);
                                start = i + 1;
                            }
                            _ => {}
                        }
                    }
                    return;
                }
                let end = s
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(s.len());
                if end == 0 {
                    break;
                }
                path.push(s[..end].to_owned());
                s = &s[end..];
                match s.strip_prefix("::") {
                    Some(next) => s = next,
                    None => break,
                }
            }
            out.push(path);
        }
        let children: Vec<String> = code
            .lines()
            .filter_map(|l| {
                let l = l
                    .trim()
                    .trim_start_matches("pub ")
                    .trim_start_matches("pub(crate) ");
                l.strip_prefix("mod ")
                    .and_then(|r| r.strip_suffix(';'))
                    .map(str::to_owned)
            })
            .collect();
        let mut out = Vec::new();
        let bytes: Vec<char> = code.chars().collect();
        let mut i = 0;
        while i < bytes.len() {
            let starts_word = i == 0 || !(ident(bytes[i - 1]) || bytes[i - 1] == ':');
            if !starts_word || !ident(bytes[i]) {
                i += 1;
                continue;
            }
            let rest: String = bytes[i..].iter().collect();
            let word_end = rest.find(|c: char| !ident(c)).unwrap_or(rest.len());
            let word = &rest[..word_end];
            let after = &rest[word_end..];
            if let Some(tail) = after.strip_prefix("::") {
                let base = match word {
                    "crate" => Some(Vec::new()),
                    // A file's module path is its own either way: `super` is one up.
                    "super" => Some(own[..own.len().saturating_sub(1)].to_vec()),
                    w if children.iter().any(|c| c == w) => {
                        let mut p = own.to_vec();
                        p.push(w.to_owned());
                        Some(p)
                    }
                    _ => None,
                };
                if let Some(base) = base {
                    let mut tail = tail;
                    let mut base = base;
                    // `super::super::x`
                    while let Some(t) = tail.strip_prefix("super::") {
                        base.pop();
                        tail = t;
                    }
                    expand(tail, base, &mut out);
                }
            }
            i += word_end.max(1);
        }
        out
    }

    /// Groups of modules that import each other in a circle (strongly connected components
    /// of more than one module), by their files relative to `src`.
    fn module_circles(src: &std::path::Path) -> Vec<Vec<String>> {
        let files = module_files(src);
        let keys: Vec<&Vec<String>> = files.keys().collect();
        let index = |p: &Vec<String>| keys.iter().position(|k| *k == p);
        let mut edges = vec![BTreeSet::new(); keys.len()];
        for (from, (own, path)) in files.iter().enumerate() {
            let text = std::fs::read_to_string(path).unwrap();
            for named in named_paths(&text, own) {
                // The longest prefix that is a module; the root itself is left out (it declares
                // every module, so everything would sit in a circle with it).
                let target = (1..=named.len())
                    .rev()
                    .find_map(|n| index(&named[..n].to_vec()));
                if let Some(to) = target
                    && to != from
                    && !keys[to].is_empty()
                {
                    edges[from].insert(to);
                }
            }
        }
        // Tarjan's strongly connected components.
        struct Walk<'e> {
            edges: &'e [BTreeSet<usize>],
            index: Vec<Option<usize>>,
            low: Vec<usize>,
            on_stack: Vec<bool>,
            stack: Vec<usize>,
            next: usize,
            out: Vec<Vec<usize>>,
        }
        fn visit(w: &mut Walk<'_>, v: usize) {
            w.index[v] = Some(w.next);
            w.low[v] = w.next;
            w.next += 1;
            w.stack.push(v);
            w.on_stack[v] = true;
            for &u in w.edges[v].iter() {
                match w.index[u] {
                    None => {
                        visit(w, u);
                        w.low[v] = w.low[v].min(w.low[u]);
                    }
                    Some(i) if w.on_stack[u] => w.low[v] = w.low[v].min(i),
                    Some(_) => {}
                }
            }
            if Some(w.low[v]) == w.index[v] {
                let mut group = Vec::new();
                while let Some(u) = w.stack.pop() {
                    w.on_stack[u] = false;
                    group.push(u);
                    if u == v {
                        break;
                    }
                }
                if group.len() > 1 {
                    w.out.push(group);
                }
            }
        }
        let n = keys.len();
        let mut walk = Walk {
            edges: &edges,
            index: vec![None; n],
            low: vec![0; n],
            on_stack: vec![false; n],
            stack: Vec::new(),
            next: 0,
            out: Vec::new(),
        };
        for v in 0..n {
            if walk.index[v].is_none() {
                visit(&mut walk, v);
            }
        }
        let paths: Vec<&std::path::PathBuf> = files.values().collect();
        walk.out
            .into_iter()
            .map(|g| {
                let mut names: Vec<String> = g
                    .into_iter()
                    .map(|i| paths[i].strip_prefix(src).unwrap().display().to_string())
                    .collect();
                names.sort();
                names
            })
            .collect()
    }

    /// Names a crate's modules take through the crate root (`crate::Name` where `Name` is no
    /// module: an item `lib.rs` defines or re-exports), as `file: path`. The root stands above
    /// every module (it declares them and re-exports from them), so such a name runs back up.
    fn names_through_the_root(src: &std::path::Path) -> Vec<String> {
        let files = module_files(src);
        let mut out = Vec::new();
        for (own, path) in &files {
            if own.is_empty() {
                continue;
            }
            let text = std::fs::read_to_string(path).unwrap();
            for named in named_paths(&text, own) {
                let is_module = (1..=named.len()).any(|n| files.contains_key(&named[..n].to_vec()));
                if !named.is_empty() && !is_module {
                    let file = path.strip_prefix(src).unwrap().display();
                    out.push(format!("{file}: crate::{}", named.join("::")));
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The tree the import checks read: this checkout, or `TIDY_ROOT` to count another one's
    /// circles and back-running imports (`git worktree add /tmp/before REV`, then
    /// `TIDY_ROOT=/tmp/before cargo test -p xtask no_module_imports -- --nocapture`).
    fn checked_tree() -> std::path::PathBuf {
        std::env::var_os("TIDY_ROOT")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(project_root)
    }

    /// No module imports its crate root's items (name them by their module instead).
    #[test]
    fn no_module_imports_run_back_up_to_the_crate_root() {
        let root = checked_tree();
        let mut crates: Vec<std::path::PathBuf> = std::fs::read_dir(root.join("crates"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        crates.push(root.join("xtask"));
        let found: Vec<String> = crates
            .iter()
            .flat_map(|dir| {
                let name = dir.file_name().unwrap().to_string_lossy().into_owned();
                names_through_the_root(&dir.join("src"))
                    .into_iter()
                    .map(move |n| format!("{name}/src/{n}"))
            })
            .collect();
        assert!(
            found.is_empty(),
            "modules naming items through their crate root (use the defining module's path):\n{}",
            found.join("\n")
        );
    }

    /// No crate has modules that import each other in a circle (test modules aside): a
    /// circle means two rooms that cannot be understood or changed apart.
    #[test]
    fn no_module_imports_run_in_a_circle() {
        let root = checked_tree();
        let mut crates: Vec<std::path::PathBuf> = std::fs::read_dir(root.join("crates"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        crates.push(root.join("xtask"));
        let mut found = Vec::new();
        for dir in crates {
            for circle in module_circles(&dir.join("src")) {
                found.push(format!(
                    "{}: {}",
                    dir.file_name().unwrap().to_string_lossy(),
                    circle.join(" <-> ")
                ));
            }
        }
        assert!(
            found.is_empty(),
            "module import circles:\n{}",
            found.join("\n")
        );
    }

    #[test]
    fn the_circle_check_sees_crate_super_braced_and_child_paths() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path();
        std::fs::create_dir_all(src.join("room")).unwrap();
        std::fs::write(
            src.join("lib.rs"),
            "pub mod a;\npub mod b;\npub mod c;\npub mod room;\n",
        )
        .unwrap();
        std::fs::write(src.join("a.rs"), "use crate::{b::Thing, Error};\n").unwrap();
        std::fs::write(
            src.join("b.rs"),
            "pub fn f() { crate::a::g() }\n#[cfg(test)]\nmod t { use crate::c::X; }\n",
        )
        .unwrap();
        std::fs::write(src.join("c.rs"), "use crate::room::inner::Y;\n").unwrap();
        std::fs::write(
            src.join("room/mod.rs"),
            "pub mod inner;\nfn f() { inner::z() }\n",
        )
        .unwrap();
        std::fs::write(src.join("room/inner.rs"), "use super::super::b::Z;\n").unwrap();
        let circles = module_circles(src);
        assert_eq!(circles.len(), 1, "{circles:?}");
        assert_eq!(circles[0], ["a.rs", "b.rs"]);
        // c -> room/inner -> c through `super::super`; room/mod.rs -> inner is one way.
        std::fs::write(
            src.join("room/inner.rs"),
            "use super::super::c::Z;\nuse super::W;\n",
        )
        .unwrap();
        std::fs::write(
            src.join("room/mod.rs"),
            "pub mod inner;\nfn f() { inner::z() }\nuse crate::c::Q;\n",
        )
        .unwrap();
        let circles = module_circles(src);
        assert_eq!(circles.len(), 2, "{circles:?}");
        // `crate::{b::Thing, Error}` in a.rs names `Error` through the root.
        assert_eq!(names_through_the_root(src), ["a.rs: crate::Error"]);
        assert!(
            circles.contains(&vec![
                "c.rs".to_owned(),
                "room/inner.rs".to_owned(),
                "room/mod.rs".to_owned()
            ]),
            "{circles:?}"
        );
    }
}
