//! The `server` binary: `serve` runs one server from a TOML configuration; `demo` starts a
//! whole local cluster as child processes.

#[cfg(not(madsim))]
mod cli;

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    cli::main()
}

/// Under the simulator the binary has nothing to do: `sim` starts servers through the library.
#[cfg(madsim)]
fn main() {}
