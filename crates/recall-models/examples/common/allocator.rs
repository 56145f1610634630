//! The allocator setup the pipeline binary (`xtask/src/main.rs`) uses, shared by the examples
//! so that their timings are the pipeline's.

// candle's many short-lived temporaries make glibc malloc fault fresh pages in on every step;
// mimalloc reuses them (../shared/notes/candle-on-cpu.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keep freed pages while training, as the pipeline binary does while a model trains
/// (`xtask/src/pages.rs`: an hour's purge delay, so no purge fires mid-step and the next steps
/// do not fault the step's buffers in again). These examples only train.
pub fn keep_freed_pages() {
    // `mi_option_purge_delay` in mimalloc's `mi_option_t` (v2 and v3), in milliseconds.
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: sets one option value; mimalloc reads options at every purge decision.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 3_600_000)
    }
}
