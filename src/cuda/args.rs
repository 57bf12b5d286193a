//! The argument structs the kernels read, each the twin of a C struct of `kernels/`. Every
//! struct here lists its fields' byte offsets under their C names; build.rs (which includes
//! this file) turns them into `static_assert(offsetof(...))` lines that the kernels are
//! compiled with, so a field added, removed, retyped or moved on one side only fails the
//! build instead of corrupting a launch. This file depends on nothing else of the crate.

/// A `#[repr(C)]` struct read by the kernels as the C struct `$cname`; a field whose C name
/// differs from its Rust name gives it after `=>`. `C_LAYOUT` is (C name, fields as (C
/// name, offset), size).
macro_rules! device_struct {
    ($(#[$meta:meta])* $vis:vis struct $name:ident = $cname:literal {
        $($(#[$fmeta:meta])* $fvis:vis $field:ident : $ty:ty $(=> $cfield:literal)?),* $(,)?
    }) => {
        $(#[$meta])*
        #[repr(C)]
        $vis struct $name {
            $($(#[$fmeta])* $fvis $field: $ty),*
        }
        impl $name {
            pub const C_LAYOUT: CLayout = CLayout {
                name: $cname,
                fields: &[$((device_struct!(@name $field $($cfield)?), std::mem::offset_of!($name, $field))),*],
                size: std::mem::size_of::<$name>(),
            };
        }
    };
    (@name $field:ident) => { stringify!($field) };
    (@name $field:ident $c:literal) => { $c };
}

/// How a C struct of the kernels must be laid out.
pub struct CLayout {
    pub name: &'static str,
    pub fields: &'static [(&'static str, usize)],
    pub size: usize,
}

/// Every struct of this file, for build.rs.
pub const ALL: [CLayout; 9] = [
    Retrieval::C_LAYOUT,
    UnitState::C_LAYOUT,
    UnitLayout::C_LAYOUT,
    StepArgs::C_LAYOUT,
    GroupStat::C_LAYOUT,
    RowCacheArgs::C_LAYOUT,
    AttendArgs::C_LAYOUT,
    GatherArgs::C_LAYOUT,
    EncodeArgs::C_LAYOUT,
];

device_struct! {
    /// One retrieval's state in a step (kernels/step.cuh documents each field).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Retrieval = "pk_retrieval" {
        pub k: i32,
        pub m: i32,
        pub cutoff: i32,
        pub ties_left: i32,
        pub n_cand: i32,
        /// Cells it contributes (`k` is a longer shortlist when refining).
        pub keep: i32,
        /// Shortlisted cells rescored exactly (0 without refining).
        pub n_refined: i32,
        _pad: i32 => "pad",
    }
}

device_struct! {
    /// One unit's state in a step; its retrievals follow it.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct UnitState = "pk_unit_state" {
        pub n_visible: i32,
        pub n_zone: i32,
        pub n_rows: i32,
        pub p_min: i32,
        pub p_max: i32,
        pub tag: u32,
        /// With a kept histogram: cells of the view counted in it, visible cells not counted
        /// in it, and all the cells it counts.
        pub n_counted: i32,
        pub n_uncounted: i32,
        pub kept_total: u32,
    }
}

device_struct! {
    /// Where each unit's data lives: unit u = a * n_h + h (`a` the token, `h` the KV head);
    /// every per-unit address is base + a * stride_a + h * stride_h, in bytes.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct UnitLayout = "pk_unit_layout" {
        pub n_units: i32,
        pub n_h: i32,
        pub k_a: i64,
        pub k_h: i64,
        pub v_a: i64,
        pub v_h: i64,
        pub codes_a: i64,
        pub codes_h: i64,
        pub nib_a: i64,
        pub nib_h: i64,
        pub w_a: i64,
        pub w_h: i64,
        pub mask_a: i64,
        pub pos_a: i64,
        pub q_a: i64,
        pub q_h: i64,
        pub out_a: i64,
        pub out_h: i64,
        pub kept_a: i64,
        pub kept_h: i64,
        pub counted_a: i64,
        pub counted_h: i64,
    }
}

device_struct! {
    /// The search stages' arguments (kernels/step.cuh documents each field).
    pub(crate) struct StepArgs = "pk_step_args" {
        pub(crate) layout: UnitLayout => "L",
        pub(crate) state: u64,
        pub(crate) n: i32,
        pub(crate) nb: i32,
        pub(crate) dp: i32,
        pub(crate) n_ret: i32,
        pub(crate) top_k: i32,
        pub(crate) n_sink: i32,
        pub(crate) n_local: i32,
        pub(crate) adaptive: i32,
        pub(crate) rho_cand: f64,
        pub(crate) rho_coll: f64,
        pub(crate) max_collisions: i32,
        pub(crate) dense_zone: i32,
        pub(crate) q: u64,
        pub(crate) q_stride: i64,
        pub(crate) n_heads: i32,
        pub(crate) mask: u64,
        pub(crate) mask_dtype: i32,
        pub(crate) pos: u64,
        pub(crate) codes: u64,
        pub(crate) nibbles: u64,
        pub(crate) weights: u64,
        pub(crate) kept: u64,
        pub(crate) counted: u64,
        pub(crate) klass: u64,
        pub(crate) hist: u64,
        pub(crate) q_i8: u64,
        pub(crate) q_factor: u64,
        pub(crate) levels: u64,
        pub(crate) counts: u64,
        pub(crate) count_hist: u64,
        pub(crate) chunk_hist: u64,
        pub(crate) chunk_ties: u64,
        pub(crate) cand: u64,
        pub(crate) mark: u64,
        pub(crate) rows: u64,
        pub(crate) refine: i32,
        pub(crate) d: i32,
        pub(crate) k: u64,
        pub(crate) k_dtype: i32,
        pub(crate) k_stride: i64,
        pub(crate) v: u64,
        pub(crate) v_stride: i64,
        pub(crate) v_bytes: i32,
        pub(crate) group: i32,
        pub(crate) scale: f32,
        pub(crate) softcap: f32,
        pub(crate) logits: u64,
        pub(crate) gstat: u64,
        pub(crate) done: u64,
        pub(crate) cache: RowCacheArgs,
    }
}

device_struct! {
    /// The group policy's softmax statistics of one head and stage, written by the kernels
    /// (kernels/group.cuh); the host only sizes them.
    pub(crate) struct GroupStat = "pk_group_stat" {
        max_ord: i32,
        n_inf: i32,
        norm: u64,
    }
}

device_struct! {
    /// Where a row cache's tables lie (kernels/row_cache.cuh, src/cuda/row_cache.rs), as the
    /// kernels take it; `Default`: no cache.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct RowCacheArgs = "pk_row_cache" {
        pub(crate) clock: u64,
        pub(crate) tag: u64,
        pub(crate) stamp: u64,
        pub(crate) data: u64,
        pub(crate) stats: u64,
        pub(crate) tables: i32,
        pub(crate) slots: i32,
        pub(crate) row_bytes: i32,
        pub(crate) v_off: i32,
    }
}

device_struct! {
    /// The attention's arguments (kernels/attention.cuh).
    pub(crate) struct AttendArgs = "pk_attend_args" {
        pub(crate) layout: UnitLayout => "L",
        pub(crate) rows: u64,
        pub(crate) row_stride: i64,
        pub(crate) n_rows: u64,
        pub(crate) n_rows_stride: i32,
        pub(crate) max_rows: i32,
        pub(crate) q: u64,
        pub(crate) q_stride: i64,
        pub(crate) n_heads: i32,
        pub(crate) k: u64,
        pub(crate) k_dtype: i32,
        pub(crate) k_stride: i64,
        pub(crate) v: u64,
        pub(crate) v_dtype: i32,
        pub(crate) v_stride: i64,
        pub(crate) dk: i32,
        pub(crate) dv: i32,
        pub(crate) scale: f32,
        pub(crate) softcap: f32,
        pub(crate) partial: u64,
        pub(crate) out: u64,
        pub(crate) out_stride: i64,
        pub(crate) done: u64,
        pub(crate) mark: u64,
        pub(crate) cache: RowCacheArgs,
        pub(crate) plan: u64,
    }
}

device_struct! {
    /// The row gather's arguments (kernels/gather.cuh).
    pub(crate) struct GatherArgs = "pk_gather_args" {
        pub(crate) layout: UnitLayout => "L",
        pub(crate) rows: u64,
        pub(crate) row_stride: i64,
        pub(crate) n_rows: u64,
        pub(crate) n_rows_stride: i32,
        pub(crate) max_rows: i32,
        pub(crate) k: u64,
        pub(crate) k_stride: i64,
        pub(crate) k_bytes: i32,
        pub(crate) v: u64,
        pub(crate) v_stride: i64,
        pub(crate) v_bytes: i32,
        pub(crate) out_k: u64,
        pub(crate) out_v: u64,
    }
}

device_struct! {
    /// The encode kernels' arguments (kernels/encode.cuh).
    pub(crate) struct EncodeArgs = "pk_encode_args" {
        pub(crate) keys: u64,
        pub(crate) key_dtype: i32,
        pub(crate) key_row_stride: i64,
        pub(crate) key_head_stride: i64,
        pub(crate) cells: u64,
        pub(crate) n_cells: u64,
        pub(crate) max_cells: i64,
        pub(crate) codes: u64,
        pub(crate) nibbles: u64,
        pub(crate) weights: u64,
        pub(crate) hist: u64,
        pub(crate) counted: u64,
        pub(crate) hist_stride: i64,
        pub(crate) counted_stride: i64,
        pub(crate) kv_size: i64,
        pub(crate) n_heads: i32,
        pub(crate) center: u64,
        pub(crate) signs: u64,
        pub(crate) scale: f32,
        pub(crate) head_dim: i32,
        pub(crate) padded_dim: i32,
        pub(crate) init_center: i32,
        pub(crate) cache: RowCacheArgs,
    }
}
