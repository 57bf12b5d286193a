//! Reading float32 `.npy` arrays (NumPy's format, version 1 or 2, C order), the format of the
//! query/key/value captures (`ggml-integration/tools/capture-qkv.cpp`).

use crate::error::{Error, Result};

/// A C-order float32 array.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Parses the bytes of a `.npy` file holding little-endian float32 in C order.
pub fn parse(bytes: &[u8]) -> Result<Array> {
    let bad = |why: &str| Error::invalid(format!("npy: {why}"));
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not an .npy file (magic)"));
    }
    let (header_len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => {
            (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
        }
        v => return Err(bad(&format!("format version {v} is not supported"))),
    };
    let end =
        start.checked_add(header_len).filter(|&e| e <= bytes.len()).ok_or_else(|| bad("truncated header"))?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| bad("header is not text"))?;
    let field = |name: &str| -> Result<&str> {
        let at =
            header.find(&format!("'{name}'")).ok_or_else(|| bad(&format!("no '{name}' in the header")))?;
        Ok(header[at + name.len() + 2..].trim_start_matches([' ', ':']))
    };
    if !field("descr")?.starts_with("'<f4'") {
        return Err(bad("only little-endian float32 ('<f4') is supported"));
    }
    if !field("fortran_order")?.starts_with("False") {
        return Err(bad("Fortran order is not supported"));
    }
    let shape_text = field("shape")?;
    let close = shape_text.find(')').ok_or_else(|| bad("malformed shape"))?;
    let shape: Vec<usize> = shape_text[1..close]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad(&format!("shape entry {s:?}"))))
        .collect::<Result<_>>()?;
    let n = shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b)).ok_or_else(|| bad("shape overflows"))?;
    let body = &bytes[end..];
    if body.len() != n * 4 {
        return Err(bad(&format!("{} data bytes for shape {shape:?} ({} expected)", body.len(), n * 4)));
    }
    let data = body.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Ok(Array { shape, data })
}

/// Reads and parses `path`.
pub fn read(path: &std::path::Path) -> Result<Array> {
    let bytes = std::fs::read(path).map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
    parse(&bytes).map_err(|e| Error::invalid(format!("{}: {}", path.display(), e.message)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[f32]) -> Vec<u8> {
        let mut h = header.to_string();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((h.len() as u16).to_le_bytes());
        out.extend(h.as_bytes());
        out.extend(data.iter().flat_map(|x| x.to_le_bytes()));
        out
    }

    #[test]
    fn reads_what_numpy_writes() {
        let data = [1.0f32, -2.5, 3.0, 4.0, 5.0, 6.0];
        let a =
            parse(&file("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 3), }", &data)).unwrap();
        assert_eq!(a.shape, vec![2, 1, 3]);
        assert_eq!(a.data, data);
        let one = parse(&file("{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", &data)).unwrap();
        assert_eq!(one.shape, vec![6]);
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        let data = [1.0f32; 4];
        for (header, why) in [
            ("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", "float32"),
            ("{'descr': '<f4', 'fortran_order': True, 'shape': (4,), }", "Fortran"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }", "data bytes"),
        ] {
            let err = parse(&file(header, &data)).unwrap_err();
            assert!(err.message.contains(why), "{header}: {err}");
        }
        assert!(parse(b"not numpy").is_err());
        assert!(parse(b"\x93NUMPY\x01\x00\xff\xff").is_err());
    }
}
