//! Driving LVM's tools (`lvs`, `lvcreate`, `lvchange`, `lvremove`), found through PATH like
//! restic. Reports are read as JSON (`lvs --reportformat json`) in exact bytes (`--units b
//! --nosuffix`), never from the human-readable columns.

use serde::Deserialize;

use crate::snapshot::name::LvName;
use crate::snapshot::tool::{self, Tool, ToolError};

const fn lvm_tool(program: &'static str) -> Tool {
    Tool {
        program,
        needed_for:
            "LVM's tools for a source on an LVM logical volume: install them (Debian: lvm2)",
        // LVM warns on stderr about every fd it inherits; restic's pipes are none of its
        // business.
        env: &[("LVM_SUPPRESS_FD_WARNINGS", "1")],
    }
}

const LVS: Tool = lvm_tool("lvs");
const LVCREATE: Tool = lvm_tool("lvcreate");
const LVCHANGE: Tool = lvm_tool("lvchange");
const LVREMOVE: Tool = lvm_tool("lvremove");

/// The fields igotchuu reads of every LV, in `lvs -o` form.
const FIELDS: &str = "lv_name,vg_name,lv_uuid,lv_attr,lv_size,pool_lv,origin,data_percent,metadata_percent,lv_tags,vg_extent_size,vg_free,lv_kernel_major,lv_kernel_minor,lv_dm_path";

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("cannot read the JSON report of `{cmd}`: {why}")]
    Report { cmd: String, why: ReportError },
}

impl CliError {
    /// Whether LVM said the volume group does not exist (not found, or not visible here).
    pub fn no_such_vg(&self) -> bool {
        matches!(self, CliError::Tool(e) if e.says(&["Volume group", "not found"]))
    }

    /// Whether LVM refused because the LV is open (mounted, held by a process).
    pub fn in_use(&self) -> bool {
        matches!(self, CliError::Tool(e) if e.says(&["in use"]))
    }
}

/// One logical volume as `lvs` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Lv {
    pub name: String,
    pub vg: String,
    /// With LVM's dashes, as `lvs` prints it.
    pub uuid: String,
    /// The 10 attribute characters (`lvs` man page, "lv_attr").
    pub attr: String,
    pub size: u64,
    /// The thin pool of a thin volume; empty otherwise.
    pub pool: String,
    /// The origin of a snapshot; empty otherwise.
    pub origin: String,
    /// How full a thin pool, thin volume or COW snapshot is; `None` where LVM has no figure.
    pub data_percent: Option<f64>,
    pub metadata_percent: Option<f64>,
    pub tags: Vec<String>,
    pub extent_size: u64,
    /// Free bytes in the LV's volume group.
    pub vg_free: u64,
    /// The kernel device numbers of an active LV.
    pub dev: Option<(u32, u32)>,
    /// `/dev/mapper/…` of an active LV.
    pub dm_path: String,
}

impl Lv {
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.vg, self.name)
    }

    fn attr(&self, i: usize) -> char {
        self.attr.chars().nth(i).unwrap_or('-')
    }

    /// A thin volume (`V`): snapshotted without a size, in its pool.
    pub fn is_thin(&self) -> bool {
        self.attr(0) == 'V'
    }

    /// A classic (COW) snapshot: `s`, or `S` while it merges.
    pub fn is_cow_snapshot(&self) -> bool {
        matches!(self.attr(0), 's' | 'S')
    }

    /// A COW snapshot the kernel invalidated because its exception store filled up: `I` (or
    /// `S`, suspended invalid) as the state character, and 100% full.
    pub fn is_invalid(&self) -> bool {
        matches!(self.attr(4), 'I' | 'S')
            || (self.is_cow_snapshot() && self.data_percent.is_some_and(|p| p >= 100.0))
    }

    /// An ordinary linear/striped/raid volume that a COW snapshot can be taken of.
    pub fn is_plain(&self) -> bool {
        matches!(self.attr(0), '-' | 'o' | 'r' | 'R' | 'm' | 'M')
    }
}

#[derive(Deserialize)]
struct Report {
    report: Vec<Section>,
}

#[derive(Deserialize)]
struct Section {
    #[serde(default)]
    lv: Vec<RawLv>,
}

/// Every value in LVM's JSON report is a string.
#[derive(Deserialize)]
struct RawLv {
    lv_name: String,
    vg_name: String,
    lv_uuid: String,
    lv_attr: String,
    lv_size: String,
    #[serde(default)]
    pool_lv: String,
    #[serde(default)]
    origin: String,
    #[serde(default)]
    data_percent: String,
    #[serde(default)]
    metadata_percent: String,
    #[serde(default)]
    lv_tags: String,
    vg_extent_size: String,
    vg_free: String,
    #[serde(default)]
    lv_kernel_major: String,
    #[serde(default)]
    lv_kernel_minor: String,
    #[serde(default)]
    lv_dm_path: String,
}

/// Why `lvs`'s JSON report could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Not JSON, or not the report's shape.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// A size field that is not a whole number of bytes (the value as given, trimmed).
    #[error("{field} is {value:?}, not a number of bytes")]
    NotBytes { field: &'static str, value: String },
}

fn bytes(field: &'static str, v: &str) -> Result<u64, ReportError> {
    // `--units b --nosuffix` prints whole bytes; older versions add ".00".
    let v = v.trim();
    let v = v.strip_suffix(".00").unwrap_or(v);
    v.parse::<u64>().map_err(|_| ReportError::NotBytes {
        field,
        value: v.to_owned(),
    })
}

fn percent(v: &str) -> Option<f64> {
    v.trim().parse::<f64>().ok()
}

/// Parses the output of `lvs --reportformat json --units b --nosuffix -o FIELDS`.
pub fn parse_report(json: &str) -> Result<Vec<Lv>, ReportError> {
    let r: Report = serde_json::from_str(json)?;
    let mut out = Vec::new();
    for raw in r.report.into_iter().flat_map(|s| s.lv) {
        let dev = match (
            raw.lv_kernel_major.trim().parse::<i64>(),
            raw.lv_kernel_minor.trim().parse::<i64>(),
        ) {
            // -1 for an inactive LV.
            (Ok(a), Ok(b)) if a >= 0 && b >= 0 => Some((a as u32, b as u32)),
            _ => None,
        };
        out.push(Lv {
            size: bytes("lv_size", &raw.lv_size)?,
            extent_size: bytes("vg_extent_size", &raw.vg_extent_size)?,
            vg_free: bytes("vg_free", &raw.vg_free)?,
            data_percent: percent(&raw.data_percent),
            metadata_percent: percent(&raw.metadata_percent),
            tags: raw
                .lv_tags
                .split(',')
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
            dev,
            name: raw.lv_name,
            vg: raw.vg_name,
            uuid: raw.lv_uuid,
            attr: raw.lv_attr,
            pool: raw.pool_lv,
            origin: raw.origin,
            dm_path: raw.lv_dm_path,
        });
    }
    Ok(out)
}

/// `lvs -a` of the volume groups named (all of them when none is), as [`Lv`]s.
pub fn lvs(vgs: &[&str]) -> Result<Vec<Lv>, CliError> {
    let mut args = vec![
        "--reportformat",
        "json",
        "--units",
        "b",
        "--nosuffix",
        "-a",
        "-o",
        FIELDS,
    ];
    args.extend_from_slice(vgs);
    let out = tool::run(&LVS, &args)?;
    parse_report(&String::from_utf8_lossy(&out.stdout)).map_err(|why| CliError::Report {
        cmd: format!("{} {}", LVS.program, args.join(" ")),
        why,
    })
}

/// `lvcreate -s [-l EXTENTS] -n NAME --addtag TAG VG/LV`: a thin snapshot without a size, a COW
/// snapshot with one. `-y` answers LVM's questions (there should be none) with yes rather than
/// waiting on a terminal nobody watches. `--monitor n`: lvcreate would otherwise start dmeventd
/// when it is not running, and started from here it would live on in igotchuu's private mount
/// namespace, holding the origin's filesystem mounted after the run (seen in the guest: the VG
/// could not be deactivated). igotchuu checks for overflow itself, so it needs no monitoring; a
/// dmeventd that systemd already runs is not affected.
pub fn create_snapshot(
    origin: &str,
    name: &LvName,
    tag: &str,
    extents: Option<u64>,
) -> Result<(), CliError> {
    let ext = extents.map(|e| e.to_string());
    let mut args = vec![
        "-s",
        "-y",
        "--monitor",
        "n",
        "-n",
        name.lv(),
        "--addtag",
        tag,
    ];
    if let Some(e) = &ext {
        args.extend(["-l", e.as_str()]);
    }
    args.push(origin);
    tool::run(&LVCREATE, &args)?;
    Ok(())
}

/// `lvchange -ay -K VG/LV`: activates a thin snapshot despite its activation-skip flag
/// (`--monitor n`: see create_snapshot).
pub fn activate(lv: &LvName) -> Result<(), CliError> {
    tool::run(&LVCHANGE, &["-ay", "-K", "--monitor", "n", lv.as_str()])?;
    Ok(())
}

/// `lvremove -f VG/LV`: exactly one LV, named in full (its type says the name was checked; the
/// caller has checked it is igotchuu's snapshot); `-f` because it is still active and there is
/// nobody to ask.
pub fn remove(lv: &LvName) -> Result<(), CliError> {
    tool::run(&LVREMOVE, &["-f", lv.as_str()])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// lvs 2.03.16 (Debian 12), captured in the QEMU guest (see tests/lvm.rs).
    const THIN: &str = include_str!("../../../tests/fixtures/lvm/lvs-thin.json");
    const COW: &str = include_str!("../../../tests/fixtures/lvm/lvs-cow-invalid.json");

    #[test]
    fn a_thin_volume_its_pool_and_snapshot_parse() {
        let lvs = parse_report(THIN).expect("parses");
        let data = lvs.iter().find(|l| l.name == "data").expect("data");
        assert!(data.is_thin() && !data.is_cow_snapshot() && !data.is_invalid());
        assert_eq!(data.pool, "pool");
        assert!(data.dev.is_some(), "{data:?}");
        assert!(data.dm_path.starts_with("/dev/mapper/"), "{data:?}");
        assert_eq!(data.size % data.extent_size, 0);
        let pool = lvs.iter().find(|l| l.name == "pool").expect("pool");
        assert!(pool.data_percent.is_some() && pool.metadata_percent.is_some());
        let snap = lvs
            .iter()
            .find(|l| l.origin == "data")
            .expect("a thin snapshot of data");
        assert!(snap.is_thin());
        assert!(
            snap.tags.iter().any(|t| t.starts_with("igotchuu")),
            "{snap:?}"
        );
        // Hidden LVs (the pool's data and metadata) are listed with -a.
        assert!(lvs.iter().any(|l| l.name.contains("_tdata")));
    }

    #[test]
    fn an_overflowed_cow_snapshot_is_invalid() {
        let lvs = parse_report(COW).expect("parses");
        let snap = lvs
            .iter()
            .find(|l| l.is_cow_snapshot())
            .expect("a COW snapshot");
        assert!(snap.is_invalid(), "{snap:?}");
        let origin = lvs.iter().find(|l| l.name == snap.origin).expect("origin");
        assert!(origin.is_plain() && !origin.is_invalid());
    }

    #[test]
    fn bad_reports_are_errors_not_guesses() {
        assert!(parse_report("").is_err());
        assert!(parse_report(r#"{"report":[{"lv":[{"lv_name":"a"}]}]}"#).is_err());
        let odd = r#"{"report":[{"lv":[{"lv_name":"a","vg_name":"v","lv_uuid":"u","lv_attr":"-wi-a-----","lv_size":"12G","vg_extent_size":"4194304","vg_free":"0"}]}]}"#;
        let e = parse_report(odd).unwrap_err();
        assert!(
            matches!(
                e,
                ReportError::NotBytes {
                    field: "lv_size",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().starts_with("lv_size is "), "{e}");
        let empty = r#"{"report":[{"lv":[]}]}"#;
        assert_eq!(parse_report(empty).expect("parses"), vec![]);
    }
}
