use clap::Parser;

fn main() {
    let cli = vggtiny::cli::Cli::parse();
    if let Err(err) = vggtiny::run(cli) {
        eprintln!("error: {err}");
        for cause in err.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        std::process::exit(vggtiny::error::exit_code(&err));
    }
}
