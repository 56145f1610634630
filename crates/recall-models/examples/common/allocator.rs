//! The allocator setup the pipeline binary (`xtask/src/main.rs`) uses, shared by the examples
//! so that their timings are the pipeline's.

// candle's many short-lived temporaries make glibc malloc fault fresh pages in on every step;
// mimalloc reuses them (../shared/notes/candle-on-cpu.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keep freed pages a second before handing them back to the OS (see `keep_freed_pages` in
/// `xtask/src/main.rs`).
pub fn keep_freed_pages() {
    // `mi_option_purge_delay` in mimalloc's `mi_option_t` (v2 and v3), in milliseconds.
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: sets one option value; mimalloc reads options at every purge decision.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 1000)
    }
}
