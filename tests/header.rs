//! The committed header is what cbindgen generates from `src/ffi` today.

#[test]
fn committed_header_is_fresh() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/pariskv.h"));
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/pariskv.h")).unwrap();
    assert!(
        generated == committed,
        "include/pariskv.h is stale: regenerate it with `PARISKV_UPDATE_HEADER=1 cargo build` and commit it"
    );
}
