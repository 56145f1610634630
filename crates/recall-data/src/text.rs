//! Line-oriented reading of raw text files with line numbers for errors, latin-1 decoding (the
//! encoding of the MovieLens `.dat` and `u.item` files) and transparent gzip.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use recall_core::{Error, Result};

/// Opens a file, decompressing when its name ends in `.gz`.
pub(crate) fn open(path: &Path) -> Result<Box<dyn BufRead>> {
    let file = std::fs::File::open(path).map_err(|e| {
        Error::io(
            if e.kind() == std::io::ErrorKind::NotFound {
                "input file not found (check the data directory in the pipeline config):"
            } else {
                "cannot open"
            },
            path,
            e,
        )
    })?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    Ok(Box::new(BufReader::with_capacity(1 << 20, reader)))
}

/// The text encodings of the raw files read line by line (the `.dat` files are latin-1; CSV
/// files go through the `csv` crate instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Latin1,
}

/// Calls `f(line_number, line)` for every non-empty line, with the trailing `\n` / `\r\n` removed.
pub(crate) fn for_each_line(
    path: &Path,
    encoding: Encoding,
    mut f: impl FnMut(u64, &str) -> Result<()>,
) -> Result<()> {
    let mut reader = open(path)?;
    let mut bytes = Vec::with_capacity(256);
    let mut decoded = String::with_capacity(256);
    let mut line_no = 0u64;
    loop {
        bytes.clear();
        let n = reader
            .read_until(b'\n', &mut bytes)
            .map_err(|e| Error::io("cannot read", path, e))?;
        if n == 0 {
            return Ok(());
        }
        line_no += 1;
        while matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        if bytes.is_empty() {
            continue;
        }
        let line: &str = match encoding {
            Encoding::Latin1 => {
                decoded.clear();
                decoded.extend(bytes.iter().map(|&b| b as char));
                &decoded
            }
        };
        f(line_no, line)?;
    }
}

/// Splits `line` on `sep` into exactly `N` fields, or a parse error naming the line.
pub(crate) fn fields<'a, const N: usize>(
    path: &Path,
    line_no: u64,
    line: &'a str,
    sep: &str,
    what: &str,
) -> Result<[&'a str; N]> {
    let mut out = [""; N];
    let mut parts = line.split(sep);
    for slot in out.iter_mut() {
        *slot = parts.next().ok_or_else(|| Error::Parse {
            path: path.to_owned(),
            line: line_no,
            message: format!(
                "expected {N} fields separated by {sep:?} ({what}), found fewer: {line:?}"
            ),
        })?;
    }
    if parts.next().is_some() {
        return Err(Error::Parse {
            path: path.to_owned(),
            line: line_no,
            message: format!(
                "expected {N} fields separated by {sep:?} ({what}), found more: {line:?}"
            ),
        });
    }
    Ok(out)
}

/// Parses one field, or a parse error naming the line and the field.
pub(crate) fn parse<T: std::str::FromStr>(
    path: &Path,
    line_no: u64,
    field: &str,
    value: &str,
) -> Result<T> {
    value.trim().parse().map_err(|_| Error::Parse {
        path: path.to_owned(),
        line: line_no,
        message: format!(
            "field `{field}` is {value:?}, expected a {}",
            std::any::type_name::<T>()
        ),
    })
}
