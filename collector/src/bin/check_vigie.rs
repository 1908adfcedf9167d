//! `check_vigie`: the Nagios plugin. Parses the command line, asks the collector, prints
//! one answer and exits with the plugin code (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).

use std::io::Write;
use std::process::ExitCode;

use vigie_collector::plugin::{self, Parsed};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (code, text) = match plugin::parse(&args) {
        Ok(Parsed::Help) => (0, plugin::help()),
        Ok(Parsed::Version) => (0, format!("check_vigie {}\n", env!("CARGO_PKG_VERSION"))),
        Ok(Parsed::Run(args)) => {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => {
                    let (code, out) = rt.block_on(plugin::run(&args));
                    (code, out + "\n")
                }
                Err(e) => (3, format!("VIGIE UNKNOWN - cannot start: {e}\n")),
            }
        }
        Err(why) => (
            3,
            format!("VIGIE UNKNOWN - {why}. Usage: {}\n", plugin::USAGE),
        ),
    };
    // Plugins write to stdout only; a closed pipe is not worth a panic.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    ExitCode::from(u8::try_from(code).unwrap_or(3))
}
