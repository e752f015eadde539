//! Numbers and addresses on the command line: decimal or `0x`-hex.

use core::fmt;

use iommu_flb_abi::PhysAddr;
use iommu_flb_abi::abi::PageSize;

/// Why a command-line number was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NumError {
    text: String,
}

impl fmt::Display for NumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not a number: use decimal (4096) or 0x-hex (0x1000), at most 64 bits",
            self.text
        )
    }
}

impl std::error::Error for NumError {}

/// Parses an unsigned 64-bit number written in decimal (`4096`) or
/// hexadecimal with a `0x`/`0X` prefix (`0x1000`). Underscores between digits
/// are accepted (`0x1_0000`), signs and empty digit strings are not.
pub fn parse_u64(text: &str) -> Result<u64, NumError> {
    let err = || NumError {
        text: text.to_owned(),
    };
    let (digits, radix) = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (text, 10),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return Err(err());
    }
    let cleaned: String = digits.chars().filter(|&c| c != '_').collect();
    if !cleaned.chars().all(|c| c.is_digit(radix)) {
        return Err(err());
    }
    u64::from_str_radix(&cleaned, radix).map_err(|_| err())
}

/// Parses a physical address with [`parse_u64`].
pub fn parse_phys(text: &str) -> Result<PhysAddr, NumError> {
    parse_u64(text).map(PhysAddr::new)
}

/// Parses a page size in bytes with [`parse_u64`]: 4096, 16384 or 65536.
///
/// # Errors
///
/// A message naming the three sizes for anything else.
pub fn parse_page_size(text: &str) -> Result<PageSize, String> {
    parse_u64(text).map_err(|e| e.to_string()).and_then(|n| {
        PageSize::from_bytes(n).ok_or_else(|| format!("page size {n}: use 4096, 16384 or 65536"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_are_the_three_kernel_page_sizes() {
        assert_eq!(parse_page_size("4096"), Ok(PageSize::Size4K));
        assert_eq!(parse_page_size("0x4000"), Ok(PageSize::Size16K));
        assert_eq!(parse_page_size("65536"), Ok(PageSize::Size64K));
        for bad in ["8192", "0", "4097", "x"] {
            assert!(parse_page_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn accepts_decimal_and_hex() {
        assert_eq!(parse_u64("4096"), Ok(4096));
        assert_eq!(parse_u64("0x1000"), Ok(4096));
        assert_eq!(parse_u64("0X1000"), Ok(4096));
        assert_eq!(parse_u64("0xdead_beef"), Ok(0xdead_beef));
        assert_eq!(parse_u64("0"), Ok(0));
        assert_eq!(parse_u64("0xffffffffffffffff"), Ok(u64::MAX));
        assert_eq!(parse_phys("0x10_0000"), Ok(PhysAddr::new(0x10_0000)));
    }

    #[test]
    fn refuses_signs_empty_digits_overflow_and_other_radixes() {
        for bad in [
            "",
            "0x",
            "-1",
            "+1",
            "0x10000000000000000",
            "18446744073709551616",
            "0b101",
            "0o7",
            "12a",
            "0xg",
            "_1",
            "1_",
            "1__0",
            " 1",
        ] {
            assert!(parse_u64(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn error_quotes_the_text() {
        let e = parse_u64("0xzz").expect_err("refused");
        assert!(e.to_string().contains("`0xzz`"), "{e}");
    }
}
