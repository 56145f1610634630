//! Tidy checks run as ordinary tests: the dependency direction in `ARCHITECTURE.md` holds, and
//! every crate has its doc header.

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
}
