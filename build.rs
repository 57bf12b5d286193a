//! Build script:
//! - generates the C header from the `ffi` module with cbindgen into `$OUT_DIR/pariskv.h`;
//!   the committed `include/pariskv.h` must equal it (a test checks); refresh it with
//!   `PARISKV_UPDATE_HEADER=1 cargo build`;
//! - with feature `cuda`, compiles `kernels/` with nvcc into one fatbin (SASS for sm_80,
//!   sm_86, sm_89, sm_90, PTX for sm_90) that the library embeds and loads through the
//!   driver API. nvcc comes from `NVCC`, `CUDA_PATH/bin` or `PATH`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

#[allow(dead_code)]
mod constants {
    include!("src/constants.rs");
}

#[allow(dead_code)]
#[path = "src/cuda/args.rs"]
mod args;

fn main() {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    header(&crate_dir, &out_dir);
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        kernels(&crate_dir, &out_dir);
    }
}

fn header(crate_dir: &Path, out_dir: &Path) {
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
    let mut raw = Vec::new();
    bindings.write(&mut raw);
    let text = sectioned(&String::from_utf8(raw).expect("cbindgen wrote UTF-8"));
    std::fs::write(out_dir.join("pariskv.h"), &text).unwrap();
    if std::env::var_os("PARISKV_UPDATE_HEADER").is_some() {
        std::fs::write(crate_dir.join("include/pariskv.h"), &text).unwrap();
    }
}

/// The header's sections, in order: a title, what the section is for, and its items (every
/// constant, type and function cbindgen writes must be in exactly one).
const SECTIONS: &[(&str, &str, &[&str])] = &[
    (
        "Status",
        "Every call returns a status; pariskv_last_error() says why a call failed.",
        &[
            "pariskv_status",
            "pariskv_last_error",
            "pariskv_version",
            "PARISKV_VERSION_MAJOR",
            "PARISKV_VERSION_MINOR",
            "PARISKV_VERSION_PATCH",
        ],
    ),
    (
        "Element types and retrieval policies",
        "Shared by the index handle, the engine primitives and the GPU path.",
        &[
            "pariskv_dtype",
            "pariskv_gqa",
            "pariskv_ratios",
            "PARISKV_DEFAULT_SEED",
            "PARISKV_DEFAULT_REFINE",
            "PARISKV_TUNED_RHO_COLL",
        ],
    ),
    (
        "Index configuration and handle",
        "For programs without a KV cache of their own: an index owns one layer's K/V rows and answers\n\
      search and attend for one decode query.",
        &[
            "pariskv_config",
            "pariskv_index",
            "pariskv_stats",
            "pariskv_config_init",
            "pariskv_config_dense_threshold",
            "pariskv_index_create",
            "pariskv_index_free",
            "pariskv_index_append",
            "pariskv_index_len",
            "pariskv_index_stats",
            "pariskv_index_search",
            "pariskv_index_attend",
        ],
    ),
    (
        "Engine primitives",
        "For engines that keep their own KV cache (llama.cpp's ggml ops): the index layout, encoding the\n\
      keys of given cells, and one decode step over the engine's cache, on the CPU.",
        &[
            "PARISKV_CENTER_ROWS",
            "PARISKV_N_CENTROIDS",
            "pariskv_layout",
            "pariskv_codes",
            "pariskv_step",
            "pariskv_kv",
            "pariskv_visibility",
            "pariskv_step_stats",
            "pariskv_layout_for",
            "pariskv_center_init",
            "pariskv_encode_cells",
            "pariskv_codes_tally",
            "pariskv_attend_cache",
            "PARISKV_TEAM_SLOT_BYTES",
            "pariskv_team",
            "pariskv_attend_cache_team",
        ],
    ),
    (
        "Engine settings",
        "What such an engine lets its users set, defined and checked here: the settings, their text form\n\
      and table (llama.cpp's --pariskv-* flags), the dense threshold, and a decode step's op parameters.",
        &[
            "PARISKV_OP_PARAMS",
            "pariskv_setting_kind",
            "pariskv_settings",
            "pariskv_setting_info",
            "pariskv_settings_init",
            "pariskv_settings_parse",
            "pariskv_settings_set",
            "pariskv_settings_format",
            "pariskv_settings_value",
            "pariskv_setting_count",
            "pariskv_setting_describe",
            "pariskv_backend",
            "pariskv_settings_dense_threshold",
            "pariskv_op_params_pack",
            "pariskv_op_params_step",
        ],
    ),
    (
        "CUDA",
        "The GPU twins of the engine primitives, on the caller's stream, and pinned host memory for K/V\n\
      the GPU reads in place (a library built with CUDA; elsewhere they fail with PARISKV_ERR_UNSUPPORTED).",
        &[
            "pariskv_cuda_step",
            "pariskv_cuda_encode_target",
            "pariskv_cuda_row_cache",
            "pariskv_cuda_layer",
            "pariskv_cuda_available",
            "pariskv_host_alloc",
            "pariskv_host_alloc_progress",
            "pariskv_host_free",
            "pariskv_cuda_encode",
            "pariskv_cuda_step_create",
            "pariskv_cuda_step_free",
            "pariskv_cuda_step_run",
            "pariskv_cuda_step_stats",
            "pariskv_cuda_row_cache_bytes",
            "pariskv_cuda_row_cache_clear",
            "pariskv_cuda_row_cache_stats",
        ],
    ),
];

/// The name an item of cbindgen's output declares.
fn item_name(block: &str) -> String {
    let code: Vec<&str> = block.lines().filter(|l| !l.starts_with("//")).collect();
    let first = code.first().copied().unwrap_or("");
    let word_after = |s: &str, key: &str| {
        s.split(key).nth(1).map(|r| r.split_whitespace().next().unwrap_or("").to_string())
    };
    if let Some(n) = word_after(first, "#define ") {
        return n;
    }
    if first.contains('(') {
        // a function: the identifier before the first parenthesis
        let head = &first[..first.find('(').unwrap()];
        return head
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .rfind(|w| !w.is_empty())
            .unwrap()
            .into();
    }
    for key in ["typedef struct ", "typedef enum ", "enum "] {
        if first.starts_with(key) {
            return word_after(first, key).unwrap().trim_end_matches(';').to_string();
        }
    }
    panic!("unrecognised header item:\n{block}");
}

/// cbindgen's header regrouped into `SECTIONS`, each with a banner; one extern "C" block.
fn sectioned(raw: &str) -> String {
    let blocks: Vec<&str> =
        raw.split("\n\n").map(|b| b.trim_matches('\n')).filter(|b| !b.is_empty()).collect();
    let is_item = |b: &&str| {
        let code = b.lines().find(|l| !l.starts_with("//")).unwrap_or("");
        ["#define PARISKV_", "typedef ", "enum ", "const ", "void ", "enum pariskv_status "]
            .iter()
            .any(|p| code.starts_with(p))
            && !code.starts_with("#define PARISKV_H")
    };
    let first_item = blocks.iter().position(&is_item).expect("header items");
    let mut items: Vec<(String, &str)> =
        blocks[first_item..].iter().filter(|b| is_item(b)).map(|b| (item_name(b), *b)).collect();
    let mut out = String::new();
    for b in &blocks[..first_item] {
        out += b;
        out += "\n\n";
    }
    out += "#ifdef __cplusplus\nextern \"C\" {\n#endif\n";
    for (title, about, names) in SECTIONS {
        let rule = "-".repeat(96);
        out += &format!("\n// {rule}\n// {title}\n//\n");
        for line in about.lines() {
            out += &format!("// {}\n", line.trim());
        }
        out += &format!("// {rule}\n");
        for name in *names {
            let at = items
                .iter()
                .position(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("{name} is not in the header"));
            out += "\n";
            out += items.remove(at).1;
            out += "\n";
        }
    }
    let rest: Vec<&String> = items.iter().map(|(n, _)| n).collect();
    assert!(rest.is_empty(), "header items in no section of build.rs SECTIONS: {rest:?}");
    out += "\n#ifdef __cplusplus\n}  // extern \"C\"\n#endif\n\n#endif  /* PARISKV_H */\n";
    out
}

/// nvcc from `NVCC`, `CUDA_PATH/bin` or `PATH`, or a build error that says how to get one.
fn find_nvcc() -> PathBuf {
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_PATH");
    println!("cargo:rerun-if-env-changed=PATH");
    if let Some(p) = std::env::var_os("NVCC") {
        return PathBuf::from(p);
    }
    if let Some(root) = std::env::var_os("CUDA_PATH") {
        let p = PathBuf::from(root).join("bin/nvcc");
        if p.exists() {
            return p;
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            if dir.join("nvcc").is_file() {
                return dir.join("nvcc");
            }
        }
    }
    panic!(
        "\n\nfeature `cuda` needs nvcc (CUDA 13.0) to compile kernels/, and none was found in NVCC, \
         CUDA_PATH/bin or PATH.\nInstall the pinned toolchain with scripts/cuda-toolchain.sh and export \
         the NVCC it prints, or point NVCC at your toolkit's nvcc.\n\n"
    );
}

/// The constants the kernels share with the Rust code, as a C header.
fn constants_header() -> String {
    use constants::*;
    let list = |v: &[f32]| v.iter().map(|x| format!("{x:?}f")).collect::<Vec<_>>().join(", ");
    let mut h = String::from("// Generated by build.rs from src/constants.rs; do not edit.\n#pragma once\n");
    writeln!(h, "#define PK_BLOCK {BLOCK}").unwrap();
    writeln!(h, "#define PK_N_CENTROIDS {N_CENTROIDS}").unwrap();
    writeln!(h, "#define PK_N_LEVELS {N_LEVELS}").unwrap();
    writeln!(h, "#define PK_N_TIERS {N_TIERS}").unwrap();
    writeln!(h, "#define PK_MAX_HEAD_DIM {MAX_HEAD_DIM}").unwrap();
    writeln!(h, "#define PK_CENTER_ROWS {CENTER_ROWS}").unwrap();
    writeln!(h, "#define PK_CHUNK {GPU_CHUNK}").unwrap();
    writeln!(h, "#define PK_CHUNK_THREADS {GPU_CHUNK_THREADS}").unwrap();
    writeln!(h, "#define PK_ATT_ROWS {GPU_ATT_ROWS}").unwrap();
    writeln!(h, "#define PK_ATT_WARPS {GPU_ATT_WARPS}").unwrap();
    writeln!(h, "#define PK_ATT_BLOCKS {GPU_ATT_BLOCKS}").unwrap();
    writeln!(h, "#define PK_ATT_STATE_HEAD {GPU_ATT_STATE_HEAD}").unwrap();
    writeln!(h, "#define PK_GATHER_WARPS {GPU_GATHER_WARPS}").unwrap();
    writeln!(h, "#define PK_ENCODE_WARPS {GPU_ENCODE_WARPS}").unwrap();
    writeln!(h, "#define PK_TOPK_THREADS_ {GPU_TOPK_THREADS}").unwrap();
    writeln!(h, "#define PK_TOPK_CLUSTER {GPU_TOPK_CLUSTER}").unwrap();
    writeln!(h, "#define PK_TOPK_STASH {GPU_TOPK_STASH}").unwrap();
    writeln!(h, "#define PK_TOPK_CLUSTER_SMEM {GPU_TOPK_CLUSTER_SMEM}").unwrap();
    writeln!(h, "#define PK_REFINE_WARPS {GPU_REFINE_WARPS}").unwrap();
    writeln!(h, "#define PK_MAX_GROUP {GPU_MAX_GROUP}").unwrap();
    writeln!(h, "#define PK_DONE_SLOTS {GPU_DONE_SLOTS}").unwrap();
    writeln!(h, "#define PK_GROUP_HEAD_BATCH {GPU_GROUP_HEAD_BATCH}").unwrap();
    writeln!(h, "__constant__ const float PK_LEVELS[{N_LEVELS}] = {{{}}};", list(&LEVELS)).unwrap();
    // the int8 magnitudes, 4 to a word (byte i of word w: level 4w + i), for __byte_perm
    const _: () = assert!(N_LEVELS == 8);
    let word = |w: usize| (0..4).map(|i| (LEVELS_I8[4 * w + i] as u8 as u32) << (8 * i)).sum::<u32>();
    writeln!(h, "#define PK_LEVELS_I8_LO {:#010x}u", word(0)).unwrap();
    writeln!(h, "#define PK_LEVELS_I8_HI {:#010x}u", word(1)).unwrap();
    writeln!(h, "#define PK_LEVEL_SCALE {LEVEL_SCALE:?}f").unwrap();
    writeln!(h, "__constant__ const float PK_THRESHOLDS[{}] = {{{}}};", N_LEVELS - 1, list(&THRESHOLDS))
        .unwrap();
    writeln!(h, "#define PK_EXP_LOG2E {EXP_LOG2E:?}f").unwrap();
    writeln!(h, "#define PK_EXP_LN2_HI {EXP_LN2_HI:?}f").unwrap();
    writeln!(h, "#define PK_EXP_LN2_LO {EXP_LN2_LO:?}f").unwrap();
    writeln!(h, "#define PK_EXP_FLOOR {EXP_FLOOR:?}f").unwrap();
    writeln!(h, "#define PK_FIXED_FRACTION_BITS {FIXED_FRACTION_BITS}").unwrap();
    writeln!(h, "#define PK_EXP_POLY_LEN {}", EXP_POLY.len()).unwrap();
    writeln!(h, "__constant__ const float PK_EXP_POLY[PK_EXP_POLY_LEN] = {{{}}};", list(&EXP_POLY)).unwrap();
    let tiers = TIER_FRACTIONS.iter().map(|x| format!("{x:?}")).collect::<Vec<_>>().join(", ");
    writeln!(h, "__constant__ const double PK_TIER_FRACTIONS[{N_TIERS}] = {{{tiers}}};").unwrap();
    // The ratio tables; the last row has no bound (usize::MAX), written as -1.
    const _: () = assert!(REFERENCE_RATIOS.len() == TUNED_RATIOS.len());
    writeln!(h, "struct pk_ratio_row {{ long long below; double cand, coll; }};").unwrap();
    writeln!(h, "#define PK_N_RATIO_ROWS {}", REFERENCE_RATIOS.len()).unwrap();
    for (name, table) in [("PK_REFERENCE_RATIOS", &REFERENCE_RATIOS), ("PK_TUNED_RATIOS", &TUNED_RATIOS)] {
        let rows: Vec<String> = table
            .iter()
            .map(|&(below, cand, coll)| {
                let below = if below == usize::MAX { -1 } else { below as i64 };
                format!("{{{below}, {cand:?}, {coll:?}}}")
            })
            .collect();
        writeln!(h, "__constant__ const pk_ratio_row {name}[{}] = {{{}}};", rows.len(), rows.join(", "))
            .unwrap();
    }
    h
}

/// The argument structs' layouts as src/cuda/args.rs declares them, checked against the
/// kernels' C declarations field by field.
fn layouts_header() -> String {
    let mut h = String::from(
        "// Generated by build.rs from src/cuda/args.rs; do not edit.\n#pragma once\n#include <stddef.h>\n",
    );
    for s in &args::ALL {
        let name = s.name;
        for (field, offset) in s.fields {
            writeln!(
                h,
                "static_assert(offsetof({name}, {field}) == {offset}, \"{name}.{field}: src/cuda/args.rs has it at byte {offset}\");"
            )
            .unwrap();
        }
        let size = s.size;
        writeln!(
            h,
            "static_assert(sizeof({name}) == {size}, \"{name}: src/cuda/args.rs makes it {size} bytes\");"
        )
        .unwrap();
    }
    h
}

fn kernels(crate_dir: &Path, out_dir: &Path) {
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-changed=src/cuda/args.rs");
    let nvcc = find_nvcc();
    std::fs::write(out_dir.join("pariskv_constants.cuh"), constants_header()).unwrap();
    std::fs::write(out_dir.join("pariskv_layouts.cuh"), layouts_header()).unwrap();
    let fatbin = out_dir.join("pariskv.fatbin");
    let mut cmd = Command::new(&nvcc);
    cmd.arg("-fatbin")
        .args(["-O3", "-std=c++17", "--expt-relaxed-constexpr"])
        .arg("-I")
        .arg(out_dir)
        .arg("-I")
        .arg(crate_dir.join("kernels"));
    for sm in ["80", "86", "89", "90"] {
        cmd.arg(format!("--generate-code=arch=compute_{sm},code=sm_{sm}"));
    }
    cmd.arg("--generate-code=arch=compute_90,code=compute_90");
    cmd.arg("-o").arg(&fatbin).arg(crate_dir.join("kernels/pariskv.cu"));
    let status = cmd.status().unwrap_or_else(|e| panic!("could not run {}: {e}", nvcc.display()));
    if !status.success() {
        panic!("nvcc failed to compile kernels/ ({status}); command: {cmd:?}");
    }
}
