//! What block device a filesystem is on, from the kernel's own records: the device number of
//! the source's fd (`st_dev`), and device-mapper's `/sys/dev/block/MAJ:MIN/dm/uuid`, which LVM
//! sets to `LVM-<vg uuid><lv uuid>` and cryptsetup to `CRYPT-…`. No name in /dev is trusted for
//! recognition.

use std::io;
use std::path::{Path, PathBuf};

/// What the device under a filesystem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    /// Not a device-mapper device (a partition, a loop device, a virtual filesystem).
    NotDm,
    /// An LVM logical volume: its LV uuid without dashes. Any layer below it (LUKS, RAID) is
    /// LVM's concern, not ours: LVM on LUKS works with no key.
    Lv { uuid: String },
    /// A LUKS (dm-crypt) container opened from an LV: a snapshot of that LV would hold only
    /// ciphertext, and opening it needs the key. `lv_uuid` is the LV's.
    CryptInLv { crypt: String, lv_uuid: String },
    /// Another device-mapper device (plain dm-crypt on a partition, multipath, …).
    OtherDm { uuid: String },
}

/// The LV uuid (32 characters, no dashes) in a device-mapper uuid LVM made; `None` for anything
/// else. The format is `LVM-` + VG uuid + LV uuid, each 32 characters, plus an optional
/// `-suffix` on LVM's internal layers (`-real`, `-cow`, `-tpool`).
pub fn lv_uuid_of(dm_uuid: &str) -> Option<&str> {
    let rest = dm_uuid.strip_prefix("LVM-")?;
    let ids = rest.get(..64)?;
    if !ids.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    match rest.get(64..) {
        Some("") => Some(&ids[32..]),
        // A hidden layer is not a volume anyone mounts.
        _ => None,
    }
}

/// Whether `a` (as lvs prints it, with dashes) is the LV uuid `b` (without).
pub fn same_uuid(a: &str, b: &str) -> bool {
    a.chars().filter(|c| *c != '-').eq(b.chars())
}

fn read_uuid(dir: &Path) -> io::Result<Option<String>> {
    match std::fs::read_to_string(dir.join("dm/uuid")) {
        Ok(s) => Ok(Some(s.trim().to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Classifies the block device `dev` (major, minor) through the sysfs mounted at `sys`
/// (`/sys`; a directory tree of the same shape in tests).
pub fn classify(sys: &Path, dev: (u32, u32)) -> io::Result<Device> {
    let base: PathBuf = sys.join(format!("dev/block/{}:{}", dev.0, dev.1));
    let Some(uuid) = read_uuid(&base)? else {
        return Ok(Device::NotDm);
    };
    if let Some(lv) = lv_uuid_of(&uuid) {
        return Ok(Device::Lv {
            uuid: lv.to_owned(),
        });
    }
    if uuid.starts_with("CRYPT-") {
        let slaves = match std::fs::read_dir(base.join("slaves")) {
            Ok(d) => d.collect::<Result<Vec<_>, _>>()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        for s in slaves {
            if let Some(below) = read_uuid(&s.path())? {
                if let Some(lv) = lv_uuid_of(&below) {
                    return Ok(Device::CryptInLv {
                        crypt: uuid,
                        lv_uuid: lv.to_owned(),
                    });
                }
            }
        }
    }
    Ok(Device::OtherDm { uuid })
}

/// The (major, minor) of a `st_dev`.
pub fn split_dev(dev: u64) -> (u32, u32) {
    (rustix::fs::major(dev), rustix::fs::minor(dev))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VG: &str = "Zk3qA9cT1b2c3d4e5f6g7h8i9j0kLmNo";
    const LV: &str = "pQrStUvWxYz0123456789abcdefGhIjK";

    fn dm(sys: &Path, dev: &str, uuid: &str) -> PathBuf {
        // As in real sysfs: /sys/dev/block/M:m is a link to /sys/devices/virtual/block/dm-N.
        let name = format!("dm-{}", dev.split(':').nth(1).unwrap());
        let real = sys.join("devices/virtual/block").join(&name);
        std::fs::create_dir_all(real.join("dm")).unwrap();
        std::fs::create_dir_all(real.join("slaves")).unwrap();
        std::fs::write(real.join("dm/uuid"), format!("{uuid}\n")).unwrap();
        std::fs::create_dir_all(sys.join("dev/block")).unwrap();
        std::os::unix::fs::symlink(&real, sys.join("dev/block").join(dev)).unwrap();
        real
    }

    #[test]
    fn lvm_uuids_are_told_from_their_layers_and_from_other_dm_devices() {
        assert_eq!(lv_uuid_of(&format!("LVM-{VG}{LV}")), Some(LV));
        assert_eq!(lv_uuid_of(&format!("LVM-{VG}{LV}-tpool")), None);
        assert_eq!(lv_uuid_of(&format!("LVM-{VG}{LV}-real")), None);
        assert_eq!(lv_uuid_of("LVM-short"), None);
        assert_eq!(lv_uuid_of("CRYPT-LUKS2-0123-root"), None);
        assert!(same_uuid("pQrStU-vWxY-z012-3456-789a-bcde-fGhIjK", LV));
        assert!(!same_uuid("pQrStU-vWxY-z012-3456-789a-bcde-fGhIjX", LV));
    }

    #[test]
    fn sysfs_says_lv_luks_in_lv_lvm_on_luks_or_neither() {
        let d = tempfile::tempdir().unwrap();
        let sys = d.path();
        // A partition: no dm directory at all.
        std::fs::create_dir_all(sys.join("dev/block/8:1")).unwrap();
        assert_eq!(classify(sys, (8, 1)).unwrap(), Device::NotDm);
        // An LV, directly.
        dm(sys, "253:0", &format!("LVM-{VG}{LV}"));
        assert_eq!(
            classify(sys, (253, 0)).unwrap(),
            Device::Lv { uuid: LV.into() }
        );
        // LVM on LUKS (the installers' layout): the LV is what is mounted; the crypt device
        // below it does not matter.
        let luks = dm(
            sys,
            "253:1",
            "CRYPT-LUKS2-00112233445566778899aabbccddeeff-sda3_crypt",
        );
        let lv2 = dm(sys, "253:2", &format!("LVM-{VG}{}", "A".repeat(32)));
        std::os::unix::fs::symlink(&luks, lv2.join("slaves/dm-1")).unwrap();
        assert_eq!(
            classify(sys, (253, 2)).unwrap(),
            Device::Lv {
                uuid: "A".repeat(32)
            }
        );
        // A LUKS container opened from an LV: refused by the backend.
        let inner = dm(
            sys,
            "253:3",
            "CRYPT-LUKS2-ffeeddccbbaa99887766554433221100-secret",
        );
        let lv3 = sys.join("devices/virtual/block/dm-0");
        std::os::unix::fs::symlink(&lv3, inner.join("slaves/dm-0")).unwrap();
        assert_eq!(
            classify(sys, (253, 3)).unwrap(),
            Device::CryptInLv {
                crypt: "CRYPT-LUKS2-ffeeddccbbaa99887766554433221100-secret".into(),
                lv_uuid: LV.into()
            }
        );
        // Plain dm-crypt on a partition: some other dm device.
        assert!(matches!(
            classify(sys, (253, 1)).unwrap(),
            Device::OtherDm { .. }
        ));
    }
}
