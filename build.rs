//! Generates the C header from the `ffi` module with cbindgen into `$OUT_DIR/pariskv.h`.
//! The committed `include/pariskv.h` must equal it (a test checks); refresh it with
//! `PARISKV_UPDATE_HEADER=1 cargo build`.

use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("pariskv.h");
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=PARISKV_UPDATE_HEADER");
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    // Only the ffi module is the public ABI; the rest of the crate is not parsed.
    let bindings = cbindgen::Builder::new()
        .with_src(crate_dir.join("src/ffi/mod.rs"))
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate include/pariskv.h");
    bindings.write_to_file(&out);
    if std::env::var_os("PARISKV_UPDATE_HEADER").is_some() {
        bindings.write_to_file(crate_dir.join("include/pariskv.h"));
    }
}
