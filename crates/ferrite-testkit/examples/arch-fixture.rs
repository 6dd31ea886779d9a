//! Writes the synthetic models of `ferrite_testkit::arch_fixtures` for
//! `scripts/arch-fixtures.sh`.
//!
//!   arch-fixture list               names, one per line
//!   arch-fixture write NAME PATH    writes the GGUF and prints `TOKENS GENERATE`
//!                                   (comma-separated ids, greedy count)

use ferrite_testkit::arch_fixtures::arch_fixtures;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let fixtures = arch_fixtures();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["list"] => fixtures.iter().for_each(|f| println!("{}", f.name)),
        ["write", name, path] => {
            let f = fixtures
                .iter()
                .find(|f| f.name == name)
                .ok_or_else(|| format!("no fixture named {name:?}"))?;
            f.model.write_to(path)?;
            let ids: Vec<String> = f.tokens.iter().map(u32::to_string).collect();
            println!("{} {}", ids.join(","), f.generate);
        }
        _ => return Err("usage: arch-fixture list | write NAME PATH".into()),
    }
    Ok(())
}
