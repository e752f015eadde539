//! `iommu-flb`: inspect, validate and generate IOMMU live-update FLB
//! handover images. See the README for commands, formats and exit codes.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use iommu_flb_abi::PhysAddr;
use iommu_flb_abi::abi::PageSize;
use iommu_flb_abi::reader::Mode;
use iommu_flb_cli::cmd::{self, ConvertOptions, GenFormat, GenOptions, ReadOptions};
use iommu_flb_cli::load::Format;
use iommu_flb_cli::num::{parse_page_size, parse_phys, parse_u64};
use iommu_flb_cli::plan::{Spec, Vendor};

/// Inspect, validate and generate IOMMU live-update FLB handover images.
///
/// Exit status: 0 success; 1 the image is refused (invalid); 2 usage or I/O
/// error (bad option, missing or unreadable file, malformed container,
/// no root address).
#[derive(Parser, Debug)]
#[command(name = "iommu-flb", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build a realistic image in memory, validate it and print it.
    Demo {
        /// The image's page size in bytes: 4096, 16384 or 65536.
        #[arg(long, value_name = "N", default_value = "4096", value_parser = parse_page_size)]
        page_size: PageSize,
    },
    /// Check an image; print one summary line if it is valid.
    Validate {
        #[command(flatten)]
        read: ReadArgs,
        /// Also check that the kernel in this ELF file (vmlinux, a module
        /// or an object with the library's formats descriptor) can read the
        /// image; refused (exit 1) if it cannot. A file without the
        /// descriptor is taken to read version 1 only.
        #[arg(long = "for", value_name = "KERNEL")]
        for_kernel: Option<PathBuf>,
    },
    /// Print the image format versions a kernel reads and writes, from the
    /// formats descriptor in its ELF file (vmlinux, .ko, .o).
    Formats {
        /// Print one JSON object (`versions`: what it reads) instead of
        /// text.
        #[arg(long)]
        json: bool,
        /// The ELF file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// List the IOMMUs, domains and devices of a valid image.
    Inspect {
        #[command(flatten)]
        read: ReadArgs,
        /// Also list deleted (unpreserved) records.
        #[arg(long)]
        all: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List every root in a dump that validates (version 2 by its magic,
    /// version 1 by its structure, or named by LUO's FLB table), with its
    /// version and counts. Needs no --root.
    Scan(ReadArgs),
    /// Write an image built with the writer to a file.
    Gen(GenArgs),
    /// Rewrite a valid image in another format version (a version-2 image
    /// for a kernel that reads only version 1, or the other way): the same
    /// live objects, deleted slots dropped. Refused (exit 1), naming what,
    /// when the target version cannot express the image.
    Convert(ConvertArgs),
}

#[derive(Args, Debug)]
struct ConvertArgs {
    /// The format version to write: 1 or 2.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=2))]
    to: u64,
    /// Version 2's generation (nonzero); by default the source's plus one,
    /// or 1 for a version-1 source.
    #[arg(long, value_name = "G", value_parser = parse_u64)]
    generation: Option<u64>,
    /// File format to write; for `phys` the last line printed is the root's
    /// physical address.
    #[arg(long, value_enum, default_value_t = GenFormatArg::Elf)]
    output_format: GenFormatArg,
    /// Output file.
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    output: PathBuf,
    #[command(flatten)]
    read: ReadArgs,
}

/// Options of every command that reads an image.
#[derive(Args, Debug)]
struct ReadArgs {
    /// How to read FILE: `auto` by its contents (ELF magic: an ELF64 core
    /// file; `KDUMP   `: kdump-compressed; `makedumpfile`: flattened; the
    /// older DISKDUMP format is refused with advice; anything else: a flat
    /// dump), or as the format named: an ELF64 core file, a
    /// kdump-compressed dump, a makedumpfile flattened file (of a
    /// kdump-compressed dump or an ELF core), or a flat physical dump (any
    /// file).
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    format: FormatArg,
    /// Physical address of the root `iommu_flb_ser` (decimal or 0x-hex).
    /// Required for flat dumps; ELF files written by `gen` carry it in a note.
    #[arg(long, value_name = "PHYS", value_parser = parse_phys)]
    root: Option<PhysAddr>,
    /// Physical address of the first byte of a flat dump (default 0).
    #[arg(long, value_name = "PHYS", value_parser = parse_phys)]
    base: Option<PhysAddr>,
    /// `handover`: memory as the old kernel left it; `restored`: a dump taken
    /// after the next kernel adopted objects (accepts INCOMING, restored,
    /// restored_domain).
    #[arg(long, value_enum, default_value_t = ModeArg::Handover)]
    mode: ModeArg,
    /// The page size of the kernel that wrote the image, in bytes: 4096,
    /// 16384 or 65536 (arm64 kernels may use any of them).
    #[arg(long, value_name = "N", default_value = "4096", value_parser = parse_page_size)]
    page_size: PageSize,
    /// The dump file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FormatArg {
    Auto,
    Elf,
    Kdump,
    Flattened,
    Phys,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeArg {
    Handover,
    Restored,
}

#[derive(Args, Debug)]
struct GenArgs {
    /// Number of IOMMUs (live ones: each gets at least one live device).
    #[arg(long, value_name = "N", default_value = "2", value_parser = parse_u64)]
    iommus: u64,
    /// Number of live domains.
    #[arg(long, value_name = "N", default_value = "4", value_parser = parse_u64)]
    domains: u64,
    /// Number of live devices.
    #[arg(long, value_name = "N", default_value = "16", value_parser = parse_u64)]
    devices: u64,
    /// Number of extra devices preserved and then unpreserved (deleted slots).
    #[arg(long, value_name = "N", default_value = "2", value_parser = parse_u64)]
    deleted: u64,
    /// Vendor of the IOMMUs.
    #[arg(long, value_enum, default_value_t = VendorArg::Mixed)]
    vendor: VendorArg,
    /// Seed for addresses, payloads and the order of pages.
    #[arg(long, value_name = "S", default_value = "0", value_parser = parse_u64)]
    seed: u64,
    /// File format to write.
    #[arg(long, value_enum, default_value_t = GenFormatArg::Elf)]
    format: GenFormatArg,
    /// The image's page size in bytes: 4096, 16384 or 65536.
    #[arg(long, value_name = "N", default_value = "4096", value_parser = parse_page_size)]
    page_size: PageSize,
    /// The format version to write: 2 (self-checking), or 1 (what kernels
    /// write today).
    #[arg(long, value_name = "V", default_value = "2", value_parser = clap::value_parser!(u64).range(1..=2))]
    abi_version: u64,
    /// Output file.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: PathBuf,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum VendorArg {
    Intel,
    Smmuv3,
    Mixed,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum GenFormatArg {
    Elf,
    Phys,
}

impl From<GenFormatArg> for GenFormat {
    fn from(f: GenFormatArg) -> Self {
        match f {
            GenFormatArg::Elf => GenFormat::Elf,
            GenFormatArg::Phys => GenFormat::Phys,
        }
    }
}

impl ReadArgs {
    fn options(&self) -> ReadOptions {
        ReadOptions {
            file: self.file.clone(),
            format: match self.format {
                FormatArg::Auto => Format::Auto,
                FormatArg::Elf => Format::Elf,
                FormatArg::Kdump => Format::Kdump,
                FormatArg::Flattened => Format::Flattened,
                FormatArg::Phys => Format::Phys,
            },
            root: self.root,
            base: self.base,
            mode: match self.mode {
                ModeArg::Handover => Mode::Handover,
                ModeArg::Restored => Mode::Restored,
            },
            page_size: self.page_size,
        }
    }
}

impl GenArgs {
    fn options(&self) -> GenOptions {
        GenOptions {
            spec: Spec {
                iommus: self.iommus,
                domains: self.domains,
                devices: self.devices,
                deleted: self.deleted,
                vendor: match self.vendor {
                    VendorArg::Intel => Vendor::Intel,
                    VendorArg::Smmuv3 => Vendor::Smmuv3,
                    VendorArg::Mixed => Vendor::Mixed,
                },
                seed: self.seed,
            },
            format: self.format.into(),
            output: self.output.clone(),
            page_size: self.page_size,
            version: self.abi_version,
        }
    }
}

/// `scan`'s progress on standard error when it is a terminal; nothing
/// otherwise.
fn progress_bar() -> impl FnMut(u64, u64) {
    let tty = std::io::stderr().is_terminal();
    move |done: u64, total: u64| {
        if !tty || total == 0 {
            return;
        }
        let pct = done.saturating_mul(100) / total;
        let mib = |b: u64| b >> 20;
        eprint!("\rscanning: {pct:3}% ({} of {} MiB)", mib(done), mib(total));
        if done >= total {
            eprintln!();
        }
    }
}

fn main() -> ExitCode {
    // Usage errors exit with 2 inside `parse`; `--help`/`--version` with 0.
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Demo { page_size } => cmd::demo(*page_size),
        Command::Validate { read, for_kernel } => match for_kernel {
            Some(kernel) => cmd::validate_for(&read.options(), kernel),
            None => cmd::validate(&read.options()),
        },
        Command::Formats { json, file } => cmd::formats_file(file, *json),
        Command::Inspect { read, all, json } => cmd::inspect(&read.options(), *all, *json),
        Command::Scan(read) => cmd::scan_file(&read.options(), &mut progress_bar()),
        Command::Gen(args) => cmd::gen_image(&args.options()),
        Command::Convert(args) => cmd::convert(&ConvertOptions {
            read: args.read.options(),
            to: args.to,
            generation: args.generation,
            format: args.output_format.into(),
            output: args.output.clone(),
        }),
    };
    match result {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            match stdout
                .write_all(out.as_bytes())
                .and_then(|()| stdout.flush())
            {
                Ok(()) => ExitCode::SUCCESS,
                // A closed pipe (`| head`) is the reader's choice, not an error.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("iommu-flb: cannot write output: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Err(failure) => {
            eprintln!("iommu-flb: {failure}");
            ExitCode::from(failure.exit_code())
        }
    }
}
