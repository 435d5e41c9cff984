//! The protobuf wire layer under the scan ([`super::scan`]) and the views ([`super::view`]): the wire
//! types, the one varint decoder, the validating [`Reader`] (errors say what is wrong, for the scan of
//! untrusted bytes) and [`next_field`], the unchecked walk of bytes the scan already validated (malformed
//! bytes end the walk early, never panic).

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarintError {
    Truncated,
    /// A tenth byte carrying more than the 64th bit (or continuing: a varint is at most 10 bytes).
    Overflow,
}

impl VarintError {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            VarintError::Truncated => "truncated varint",
            VarintError::Overflow => "varint overflows 64 bits",
        }
    }
}

/// The varint at `*pos`, advancing it past the bytes read. One-byte varints (field keys, most lengths)
/// take the first branch.
#[inline(always)]
pub(crate) fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, VarintError> {
    let Some(&b) = buf.get(*pos) else {
        return Err(VarintError::Truncated);
    };
    *pos += 1;
    if b < 0x80 {
        return Ok(u64::from(b));
    }
    let mut v = u64::from(b & 0x7f);
    for i in 1..9 {
        let Some(&b) = buf.get(*pos) else {
            return Err(VarintError::Truncated);
        };
        *pos += 1;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(v);
        }
    }
    // The 10th byte holds only the 64th bit (checked here, off the loop's path).
    let Some(&b) = buf.get(*pos) else {
        return Err(VarintError::Truncated);
    };
    *pos += 1;
    if b > 1 {
        return Err(VarintError::Overflow);
    }
    Ok(v | u64::from(b) << 63)
}

pub(crate) const WIRE_VARINT: u8 = 0;
pub(crate) const WIRE_FIXED64: u8 = 1;
pub(crate) const WIRE_LEN: u8 = 2;
pub(crate) const WIRE_FIXED32: u8 = 5;

/// A cursor over protobuf bytes. `pos` is absolute in `buf`; reads stop at `buf.len()`.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    pub(crate) fn new(buf: &'a [u8], pos: usize) -> Self {
        Reader { buf, pos }
    }

    /// Next field key, or `None` at the end.
    #[inline]
    pub(crate) fn key(&mut self) -> Result<Option<(u32, u8)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let k = self.varint()?;
        let wire = (k & 7) as u8;
        let field = k >> 3;
        if field == 0 || field > u32::MAX as u64 >> 3 {
            return Err(format!("invalid field number {field}"));
        }
        if !matches!(wire, WIRE_VARINT | WIRE_FIXED64 | WIRE_LEN | WIRE_FIXED32) {
            return Err(format!("unsupported wire type {wire} for field {field}"));
        }
        Ok(Some((field as u32, wire)))
    }

    #[inline]
    pub(crate) fn varint(&mut self) -> Result<u64, String> {
        varint(self.buf, &mut self.pos).map_err(|e| e.as_str().to_owned())
    }

    #[inline]
    pub(crate) fn fixed64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        // `take` returned exactly 8 bytes.
        Ok(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        let Some(end) = end else {
            return Err(format!(
                "truncated: {n} bytes declared, {} left",
                self.buf.len() - self.pos
            ));
        };
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// A length-delimited field's absolute byte range.
    #[inline]
    pub(crate) fn len_delimited(&mut self) -> Result<(usize, usize), String> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| "length overflows".to_owned())?;
        let start = self.pos;
        self.take(len)?;
        Ok((start, self.pos))
    }

    #[inline]
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], String> {
        let (s, e) = self.len_delimited()?;
        Ok(&self.buf[s..e])
    }

    #[inline]
    pub(crate) fn skip(&mut self, wire: u8) -> Result<(), String> {
        match wire {
            WIRE_VARINT => self.varint().map(|_| ()),
            WIRE_FIXED64 => self.take(8).map(|_| ()),
            WIRE_LEN => self.len_delimited().map(|_| ()),
            WIRE_FIXED32 => self.take(4).map(|_| ()),
            _ => Err(format!("unsupported wire type {wire}")),
        }
    }
}

/// The next field of a message at `*pos`: `(field, wire type, payload range)`; the range is empty for
/// varints and fixed-width fields. `None` at the end or on malformed bytes (a caller that needs to tell
/// them apart checks `*pos < buf.len()` first).
#[inline(always)]
pub(crate) fn next_field(buf: &[u8], pos: &mut usize) -> Option<(u64, u8, usize, usize)> {
    if *pos >= buf.len() {
        return None;
    }
    let key = varint(buf, pos).ok()?;
    let (field, wire) = (key >> 3, (key & 7) as u8);
    match wire {
        WIRE_VARINT => {
            varint(buf, pos).ok()?;
            Some((field, wire, *pos, *pos))
        }
        WIRE_LEN => {
            let len = usize::try_from(varint(buf, pos).ok()?).ok()?;
            let start = *pos;
            let end = start.checked_add(len).filter(|&e| e <= buf.len())?;
            *pos = end;
            Some((field, wire, start, end))
        }
        WIRE_FIXED64 | WIRE_FIXED32 => {
            let n = if wire == WIRE_FIXED64 { 8 } else { 4 };
            *pos = pos.checked_add(n).filter(|&e| e <= buf.len())?;
            Some((field, wire, *pos, *pos))
        }
        _ => None,
    }
}
