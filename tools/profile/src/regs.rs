//! x86_64 registers as the stub describes them: where rip, rsp, rbp, cs, fs_base, gs_base and
//! the control registers sit in its `g` reply, read from its target description (the
//! `target.xml` of `qXfer:features:read` and the files it includes), and their decoding.
//!
//! gdb numbers registers in document order from 0 (a `regnum` attribute restarts the count);
//! the `g` reply holds them in that order, each `bitsize / 8` bytes, little-endian. QEMU's
//! i386-64bit.xml has the control registers and segment bases; a stub without a target
//! description gets gdb's fixed amd64 layout, which has neither (then CR3, and with it the
//! RAM-file page walk, is not available).

/// One register of the description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterDesc {
    pub name: String,
    pub bits: u32,
    pub regnum: u32,
}

/// What one description document says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeatureDoc {
    pub architecture: Option<String>,
    /// `xi:include href` values, in order.
    pub includes: Vec<String>,
    /// (name, bitsize, regnum if given), in document order.
    pub registers: Vec<(String, u32, Option<u32>)>,
}

/// Reads the parts of a target description document that matter here. Comments are skipped
/// (QEMU's i386-64bit.xml comments out three registers); the document is the stub's, so
/// anything malformed is an error naming `name`, never a guess.
pub fn parse_feature_doc(name: &str, xml: &str) -> Result<FeatureDoc, String> {
    let mut doc = FeatureDoc::default();
    let mut rest = xml;
    while let Some(start) = rest.find('<') {
        rest = &rest[start..];
        if let Some(after) = rest.strip_prefix("<!--") {
            let end = after
                .find("-->")
                .ok_or_else(|| format!("{name}: a comment that does not end"))?;
            rest = &after[end + 3..];
            continue;
        }
        let end = rest
            .find('>')
            .ok_or_else(|| format!("{name}: a tag that does not end"))?;
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        let element = tag
            .split(|c: char| c.is_ascii_whitespace() || c == '/')
            .next()
            .unwrap_or("");
        match element {
            "reg" => {
                let reg_name = attribute(tag, "name")
                    .ok_or_else(|| format!("{name}: a <reg> without a name: <{tag}>"))?;
                let bits = attribute(tag, "bitsize")
                    .and_then(|b| b.parse::<u32>().ok())
                    .filter(|b| (1..=4096).contains(b))
                    .ok_or_else(|| format!("{name}: register {reg_name} has no usable bitsize"))?;
                let regnum = match attribute(tag, "regnum") {
                    Some(n) => Some(n.parse::<u32>().map_err(|_| {
                        format!("{name}: register {reg_name} has regnum {n:?}, not a number")
                    })?),
                    None => None,
                };
                doc.registers.push((reg_name.to_string(), bits, regnum));
            }
            "xi:include" => {
                let href = attribute(tag, "href")
                    .ok_or_else(|| format!("{name}: an xi:include without href"))?;
                doc.includes.push(href.to_string());
            }
            "architecture" => {
                let end = rest
                    .find('<')
                    .ok_or_else(|| format!("{name}: <architecture> does not end"))?;
                doc.architecture = Some(rest[..end].trim().to_string());
                rest = &rest[end..];
            }
            _ => {}
        }
    }
    Ok(doc)
}

/// The value of `key="..."` (or single quotes) in a tag's text.
fn attribute<'a>(tag: &'a str, key: &str) -> Option<&'a str> {
    let mut search = tag;
    while let Some(i) = search.find(key) {
        let before_ok = i == 0 || search.as_bytes()[i - 1].is_ascii_whitespace();
        let after = search[i + key.len()..].trim_start();
        if before_ok {
            if let Some(value) = after.strip_prefix('=') {
                let value = value.trim_start();
                let quote = value.chars().next()?;
                if quote == '"' || quote == '\'' {
                    let inner = &value[1..];
                    return inner.find(quote).map(|end| &inner[..end]);
                }
            }
        }
        search = &search[i + key.len()..];
    }
    None
}

/// Numbers the registers of several documents (in include order) the way gdb does.
pub fn number_registers(docs: &[FeatureDoc]) -> Vec<RegisterDesc> {
    let mut next = 0u32;
    let mut out = Vec::new();
    for doc in docs {
        for (name, bits, regnum) in &doc.registers {
            let n = regnum.unwrap_or(next);
            out.push(RegisterDesc {
                name: name.clone(),
                bits: *bits,
                regnum: n,
            });
            next = n.saturating_add(1);
        }
    }
    out
}

/// Where a register's bytes are in the `g` reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Field {
    offset: usize,
    size: usize,
}

/// The registers the sampler needs, located in the `g` reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterLayout {
    rip: Field,
    rsp: Field,
    rbp: Field,
    cs: Option<Field>,
    fs_base: Option<Field>,
    gs_base: Option<Field>,
    cr0: Option<Field>,
    cr3: Option<Field>,
    cr4: Option<Field>,
    efer: Option<Field>,
    /// Where the description came from, for messages.
    pub source: String,
}

/// gdb's amd64 register set for a stub without a target description.
const FALLBACK_AMD64: &[(&str, u32)] = &[
    ("rax", 64),
    ("rbx", 64),
    ("rcx", 64),
    ("rdx", 64),
    ("rsi", 64),
    ("rdi", 64),
    ("rbp", 64),
    ("rsp", 64),
    ("r8", 64),
    ("r9", 64),
    ("r10", 64),
    ("r11", 64),
    ("r12", 64),
    ("r13", 64),
    ("r14", 64),
    ("r15", 64),
    ("rip", 64),
    ("eflags", 32),
    ("cs", 32),
    ("ss", 32),
    ("ds", 32),
    ("es", 32),
    ("fs", 32),
    ("gs", 32),
];

impl RegisterLayout {
    /// The layout of `registers` (numbered by [`number_registers`]). The `g` reply holds the
    /// registers from number 0 without gaps; a register after a gap is treated as absent.
    pub fn from_registers(
        registers: &[RegisterDesc],
        source: String,
    ) -> Result<RegisterLayout, String> {
        let mut sorted: Vec<&RegisterDesc> = registers.iter().collect();
        sorted.sort_by_key(|r| r.regnum);
        let mut offset = 0usize;
        let mut fields: Vec<(&str, Field)> = Vec::new();
        for (expected, r) in sorted.iter().enumerate() {
            if r.regnum as usize != expected {
                break;
            }
            let size = (r.bits as usize).div_ceil(8);
            fields.push((r.name.as_str(), Field { offset, size }));
            offset += size;
        }
        let find = |name: &str| {
            fields
                .iter()
                .find(|(n, f)| *n == name && (1..=8).contains(&f.size))
                .map(|(_, f)| *f)
        };
        let need = |name: &str| {
            find(name).ok_or_else(|| {
                format!(
                    "{source}: the stub's registers have no 64-bit {name}: not an x86_64 target?"
                )
            })
        };
        Ok(RegisterLayout {
            rip: need("rip")?,
            rsp: need("rsp")?,
            rbp: need("rbp")?,
            cs: find("cs"),
            fs_base: find("fs_base"),
            gs_base: find("gs_base"),
            cr0: find("cr0"),
            cr3: find("cr3"),
            cr4: find("cr4"),
            efer: find("efer"),
            source,
        })
    }

    /// gdb's fixed amd64 layout (no control registers, no segment bases).
    pub fn fallback() -> RegisterLayout {
        let regs: Vec<RegisterDesc> = FALLBACK_AMD64
            .iter()
            .enumerate()
            .map(|(i, (name, bits))| RegisterDesc {
                name: name.to_string(),
                bits: *bits,
                regnum: i as u32,
            })
            .collect();
        RegisterLayout::from_registers(&regs, "gdb's amd64 register layout".into())
            .expect("the built-in layout has rip, rsp and rbp")
    }

    /// True when the description has FS.base (the thread pointer, for the shadow stack).
    pub fn has_fs_base(&self) -> bool {
        self.fs_base.is_some()
    }

    /// True when the description has CR3 (needed to walk page tables).
    pub fn has_cr3(&self) -> bool {
        self.cr3.is_some()
    }

    /// Decodes a `g` reply (hex; `x` digits mark registers the stub could not read). An
    /// error means the reply does not fit the description.
    pub fn decode(&self, reply: &[u8]) -> Result<Decoded, String> {
        let get = |f: Field| -> Result<Option<u64>, String> {
            let hex = reply
                .get(f.offset * 2..(f.offset + f.size) * 2)
                .ok_or_else(|| {
                    format!(
                        "the `g` reply has {} bytes, but {} puts a register at bytes {}..{}",
                        reply.len() / 2,
                        self.source,
                        f.offset,
                        f.offset + f.size
                    )
                })?;
            if hex.iter().all(|&c| c == b'x') {
                return Ok(None);
            }
            let bytes = crate::rsp::decode_hex(hex).ok_or_else(|| {
                format!(
                    "the `g` reply is not hex at bytes {}..{}: {}",
                    f.offset,
                    f.offset + f.size,
                    crate::rsp::excerpt(hex)
                )
            })?;
            Ok(Some(
                bytes
                    .iter()
                    .rev()
                    .fold(0u64, |acc, &b| acc << 8 | u64::from(b)),
            ))
        };
        let opt = |f: Option<Field>| f.map(get).transpose().map(Option::flatten);
        let (Some(rip), Some(rsp), Some(rbp)) = (get(self.rip)?, get(self.rsp)?, get(self.rbp)?)
        else {
            return Ok(Decoded::Unavailable);
        };
        Ok(Decoded::Registers(Registers {
            rip,
            rsp,
            rbp,
            cs: opt(self.cs)?,
            fs_base: opt(self.fs_base)?,
            gs_base: opt(self.gs_base)?,
            cr0: opt(self.cr0)?,
            cr3: opt(self.cr3)?,
            cr4: opt(self.cr4)?,
            efer: opt(self.efer)?,
        }))
    }
}

/// A decoded `g` reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    Registers(Registers),
    /// The stub marked rip, rsp or rbp as unavailable (`x`).
    Unavailable,
}

/// One vCPU's registers at a stop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Registers {
    pub rip: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub cs: Option<u64>,
    pub fs_base: Option<u64>,
    pub gs_base: Option<u64>,
    pub cr0: Option<u64>,
    pub cr3: Option<u64>,
    pub cr4: Option<u64>,
    pub efer: Option<u64>,
}

impl Registers {
    /// The privilege level: the low two bits of CS.
    pub fn cpl(&self) -> Option<u8> {
        self.cs.map(|cs| (cs & 3) as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU_TARGET: &str = r#"<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd"><target><architecture>i386:x86-64</architecture><xi:include href="i386-64bit.xml"/></target>"#;

    /// The register lines of QEMU 7.2's i386-64bit.xml, comment included.
    fn qemu_core() -> String {
        let mut xml = String::from("<feature name=\"org.gnu.gdb.i386.core\">\n<flags id=\"x\" size=\"4\"><field name=\"\" start=\"22\" end=\"31\"/></flags>\n");
        let gprs = [
            "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11",
            "r12", "r13", "r14", "r15", "rip",
        ];
        for (i, r) in gprs.iter().enumerate() {
            let num = if i == 0 { " regnum=\"0\"" } else { "" };
            xml += &format!("<reg name=\"{r}\" bitsize=\"64\" type=\"int64\"{num}/>\n");
        }
        xml += "<reg name=\"eflags\" bitsize=\"32\" type=\"x64_eflags\"/>\n";
        for s in ["cs", "ss", "ds", "es", "fs", "gs"] {
            xml += &format!("<reg name=\"{s}\" bitsize=\"32\" type=\"int32\"/>\n");
        }
        xml += "<!-- Segment descriptor caches and TLS base MSRs -->\n<!--reg name=\"cs_base\" bitsize=\"64\" type=\"int64\"/>\n<reg name=\"ss_base\" bitsize=\"64\" type=\"int64\"/-->\n";
        for r in [
            "fs_base",
            "gs_base",
            "k_gs_base",
            "cr0",
            "cr2",
            "cr3",
            "cr4",
            "cr8",
            "efer",
        ] {
            xml += &format!("<reg name='{r}' bitsize='64' type='int64'/>\n");
        }
        for i in 0..8 {
            xml += &format!("<reg name=\"st{i}\" bitsize=\"80\" type=\"i387_ext\"/>\n");
        }
        xml + "</feature>"
    }

    fn qemu_layout() -> RegisterLayout {
        let target = parse_feature_doc("target.xml", QEMU_TARGET).unwrap();
        assert_eq!(target.architecture.as_deref(), Some("i386:x86-64"));
        assert_eq!(target.includes, ["i386-64bit.xml"]);
        let core = parse_feature_doc("i386-64bit.xml", &qemu_core()).unwrap();
        let regs = number_registers(&[target, core]);
        assert!(
            !regs
                .iter()
                .any(|r| r.name == "cs_base" || r.name == "ss_base"),
            "commented-out registers are skipped"
        );
        RegisterLayout::from_registers(&regs, "test".into()).unwrap()
    }

    #[test]
    fn qemu_layout_puts_cr3_at_its_offset() {
        let layout = qemu_layout();
        // 16 GPRs + rip (8 bytes each), eflags + 6 selectors (4 each), fs_base, gs_base,
        // k_gs_base, cr0, cr2: cr3 at 128 + 8 + 28 + 40.
        assert_eq!(
            layout.cr3,
            Some(Field {
                offset: 204,
                size: 8
            })
        );
        let mut g = vec![0u8; 260];
        let put = |g: &mut Vec<u8>, off: usize, v: &[u8]| g[off..off + v.len()].copy_from_slice(v);
        put(&mut g, 16 * 8, &0x100abcu64.to_le_bytes());
        put(&mut g, 6 * 8, &0x7000u64.to_le_bytes());
        put(&mut g, 7 * 8, &0x6ff0u64.to_le_bytes());
        put(&mut g, 140, &0x23u32.to_le_bytes());
        put(&mut g, 164, &0x10b200u64.to_le_bytes());
        put(&mut g, 204, &0x108000u64.to_le_bytes());
        let hex = crate::rsp::encode_hex(&g);
        let Decoded::Registers(r) = layout.decode(hex.as_bytes()).unwrap() else {
            panic!("registers are available")
        };
        assert_eq!((r.rip, r.rbp, r.rsp), (0x100abc, 0x7000, 0x6ff0));
        assert_eq!(r.cpl(), Some(3));
        assert_eq!(r.fs_base, Some(0x10b200));
        assert_eq!(r.cr3, Some(0x108000));
    }

    #[test]
    fn short_or_bad_replies_are_errors_and_x_is_unavailable() {
        let layout = qemu_layout();
        let e = layout.decode(b"0011").unwrap_err();
        assert!(e.contains("has 2 bytes"), "{e}");
        let mut hex = "00".repeat(260).into_bytes();
        hex[204 * 2..212 * 2].fill(b'x');
        assert!(matches!(layout.decode(&hex).unwrap(), Decoded::Registers(r) if r.cr3.is_none()));
        let mut bad = hex.clone();
        bad[16 * 16..17 * 16].fill(b'x');
        assert_eq!(layout.decode(&bad).unwrap(), Decoded::Unavailable);
        bad[16 * 16] = b'q';
        assert!(layout.decode(&bad).unwrap_err().contains("not hex"));
    }

    #[test]
    fn fallback_has_no_control_registers() {
        let layout = RegisterLayout::fallback();
        assert!(!layout.has_cr3());
        assert_eq!(
            layout.rip,
            Field {
                offset: 128,
                size: 8
            }
        );
        assert_eq!(
            layout.cs,
            Some(Field {
                offset: 140,
                size: 4
            })
        );
    }

    #[test]
    fn malformed_documents_are_errors() {
        assert!(parse_feature_doc("t", "<!-- open")
            .unwrap_err()
            .contains("comment"));
        assert!(parse_feature_doc("t", "<reg name=\"a\"/>")
            .unwrap_err()
            .contains("bitsize"));
        assert!(parse_feature_doc("t", "<reg bitsize=\"8\"/>")
            .unwrap_err()
            .contains("without a name"));
        let no_rip =
            number_registers(&[
                parse_feature_doc("t", "<reg name=\"eax\" bitsize=\"32\"/>").unwrap()
            ]);
        assert!(RegisterLayout::from_registers(&no_rip, "t".into())
            .unwrap_err()
            .contains("no 64-bit rip"));
    }
}
