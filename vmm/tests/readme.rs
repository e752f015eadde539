//! The README's "In a VMM" example is the crate documentation's example,
//! which runs as a doctest: this fails if the README's copy differs from it
//! (the doctest's hidden `# ` lines aside), so the README cannot show code
//! that no longer compiles.

const README: &str = include_str!("../../README.md");
const LIB: &str = include_str!("../src/lib.rs");

/// The lines of the first code block after the line `after` in `lines`.
fn block_after<'a>(lines: &[&'a str], after: &str) -> Vec<&'a str> {
    let at = lines
        .iter()
        .position(|l| *l == after)
        .unwrap_or_else(|| panic!("no line {after:?}"));
    let mut rest = lines[at..].iter().skip_while(|l| !l.starts_with("```"));
    assert!(rest.next().is_some(), "no code block after {after:?}");
    rest.take_while(|l| !l.starts_with("```"))
        .copied()
        .collect()
}

#[test]
fn the_readme_example_is_the_doctest() {
    let docs: Vec<&str> = LIB
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    let doctest: Vec<&str> = block_after(&docs, "# Example")
        .into_iter()
        .filter(|l| !l.starts_with("# ") && *l != "#")
        .collect();
    let readme: Vec<&str> = README.lines().collect();
    let shown = block_after(&readme, "## In a VMM");
    assert!(doctest.len() > 20, "the doctest was found: {doctest:?}");
    assert_eq!(shown, doctest);
}
