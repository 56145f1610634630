//! Tidy checks run as ordinary tests: the dependency direction in `ARCHITECTURE.md` holds,
//! every crate has its doc header, and every number in README's "Measured" table is one that
//! MEASUREMENTS.md records.

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
}
