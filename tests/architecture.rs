//! Keeps `docs/ARCHITECTURE.md` honest: its codemap must name every source file.

use std::path::Path;

fn source_files(dir: &Path, files: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            source_files(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let relative = path
                .strip_prefix(env!("CARGO_MANIFEST_DIR"))
                .expect("under the manifest dir");
            files.push(relative.to_string_lossy().replace('\\', "/"));
        }
    }
}

#[test]
fn codemap_names_every_source_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let architecture = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md"))
        .expect("docs/ARCHITECTURE.md exists");
    let mut files = Vec::new();
    source_files(&root.join("src"), &mut files);
    assert!(!files.is_empty());
    let missing: Vec<&String> = files
        .iter()
        .filter(|file| !architecture.contains(&format!("`{file}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/ARCHITECTURE.md codemap misses {missing:?}"
    );
}
