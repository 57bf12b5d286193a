//! Builds the static library, compiles `tests/c/api_test.c` against `include/pariskv.h`
//! and it with the system C compiler (`$CC`, default `cc`), and runs it (under
//! `$PARISKV_C_RUNNER` when set, e.g. valgrind). Also checks that the header compiles as
//! C99 and as C++.

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// `target/<profile>/libpariskv.a`, built for the profile this test was built with.
fn static_library(root: &Path) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let mut cargo = Command::new(env!("CARGO"));
    cargo.current_dir(root).args(["build", "--lib", "--quiet"]);
    if release {
        cargo.arg("--release");
    }
    run(&mut cargo);
    let lib = profile_dir.join("libpariskv.a");
    assert!(lib.exists(), "{} was not built", lib.display());
    lib
}

fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".into())
}

/// Compiles `tests/c/<name>.c` against the header and the static library, runs it and
/// returns what it printed.
fn build_and_run(name: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = static_library(root);
    let dir = std::env::temp_dir().join(format!("pariskv-c-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join(name);
    run(Command::new(cc())
        .args(["-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(root.join("include"))
        .arg(root.join(format!("tests/c/{name}.c")))
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&exe));
    let output = run(&mut runner(&exe));
    std::fs::remove_dir_all(&dir).ok();
    output
}

/// The command that runs a compiled C program: the program itself, or under the tool
/// `PARISKV_C_RUNNER` names with its arguments (scripts/sanitize.sh runs them under valgrind).
fn runner(exe: &Path) -> Command {
    let tool = std::env::var("PARISKV_C_RUNNER").unwrap_or_default();
    let mut words = tool.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut cmd = Command::new(program);
            cmd.args(words).arg(exe);
            cmd
        }
        None => Command::new(exe),
    }
}

#[test]
fn c_program_uses_the_whole_api() {
    let output = build_and_run("api_test");
    println!("{output}");
    assert!(output.contains(" 0 failures"), "{output}");
}

#[test]
fn readme_example_builds_runs_and_is_quoted_verbatim() {
    let output = build_and_run("readme_example");
    assert!(output.starts_with("out[0] = "), "{output}");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("tests/c/readme_example.c")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.contains(&example), "README.md must quote tests/c/readme_example.c verbatim");
}

#[test]
fn header_compiles_as_c99_and_cpp() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let header = root.join("include/pariskv.h");
    run(Command::new(cc())
        .args(["-std=c99", "-pedantic", "-Wall", "-Werror", "-fsyntax-only", "-x", "c"])
        .arg(&header));
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    run(Command::new(cxx)
        .args(["-std=c++11", "-Wall", "-Werror", "-fsyntax-only", "-x", "c++"])
        .arg(&header));
}
