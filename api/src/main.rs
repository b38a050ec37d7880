//! `governance`: thin entry point; everything lives in the library.

use clap::Parser;
use governance_api::{cli::Cli, commands};

/// mimalloc rather than glibc's allocator: under step load, profiles of the server spent about
/// 12 % of its CPU in glibc `malloc`/`free` (`_int_malloc`, `malloc_consolidate`, `_int_free`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
