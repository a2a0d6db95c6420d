//! `autoscaler-manage`: see `autoscaler::manage`.

fn main() -> std::process::ExitCode {
    autoscaler::manage::main()
}
