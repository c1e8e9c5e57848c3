//! Start-up warnings about host settings that hurt Spate.
//!
//! `spate` calls [`host_warnings`] once at start-up and logs each line it returns. Every line
//! is one short sentence naming the setting, its value and the harm, and points at
//! `tuning/README.md`, where the playbook explains the setting and how to change it
//! (`tuning/sysctl.sh` and `tuning/ethtool.sh` check, apply and roll back). Nothing here
//! changes the host, and nothing here fails: a file that cannot be read (a container without
//! `/sys`, a kernel without cpufreq) simply yields no warning, because a missing warning costs
//! less than a broker that refuses to start over a tuning detail.
//!
//! The checks read `/proc` and `/sys` under a `root` directory, which is `/` in production and
//! a fake tree in tests. They are plain std file reads: no libc, no async, no glommio, so they
//! can run before the executors start.
//!
//! What is checked, and why it hurts a thread-per-core broker:
//! - `vm.swappiness` above 10: the kernel swaps anonymous memory (a shard's buffers, its batch
//!   cache) while keeping page cache, and a shard that faults on a swapped page stalls every
//!   connection it owns.
//! - transparent huge pages `always`: page faults may stall in compaction, and khugepaged
//!   rewrites memory behind the shards' backs. (The broker itself opts out of THP at start,
//!   `broker::disable_transparent_huge_pages`; the warning is for the rest of the host.)
//! - a CPU frequency governor other than `performance`: a core that clocked down during a
//!   quiet spell serves the next requests slowly while it ramps up.
//! - the `bfq` I/O scheduler on the data dir's device: it adds per-request CPU cost and
//!   latency that glommio's own I/O scheduling (shares and latency classes) does not need.
//! - [`memlock_warning`]: `RLIMIT_MEMLOCK` below what glommio's `io_uring` rings need.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where every warning sends the operator.
const PLAYBOOK: &str = "tuning/README.md";

/// Above this, `vm.swappiness` lets the kernel swap shard memory; the playbook sets 1.
const SWAPPINESS_MAX: u64 = 10;

/// glommio needs this much locked memory per executor (one executor per core) for its
/// `io_uring` rings; below it an executor fails to start with `MemLockLimit`.
pub const MEMLOCK_PER_CORE_BYTES: u64 = 512 * 1024;

/// Returns one short line per host setting that will hurt Spate, in a fixed order.
///
/// `root` is `/` in production and a fake tree in tests; `data_dir` is the broker's data
/// directory, whose block device's I/O scheduler is checked. The result is empty on a host
/// tuned as `tuning/README.md` describes.
#[must_use]
pub fn host_warnings(root: &Path, data_dir: &Path) -> Vec<String> {
    let mut warnings = Vec::new();
    warnings.extend(swappiness_warning(root));
    warnings.extend(transparent_huge_pages_warning(root));
    warnings.extend(governor_warning(root));
    warnings.extend(scheduler_warning(root, data_dir));
    warnings
}

/// Returns a warning when this process's `RLIMIT_MEMLOCK` soft limit is below
/// [`MEMLOCK_PER_CORE_BYTES`] times `cores`, read from `/proc/self/limits`.
#[must_use]
pub fn memlock_warning(cores: usize) -> Option<String> {
    memlock_warning_in(Path::new("/"), cores)
}

/// [`memlock_warning`] with `/proc` under `root` (for tests).
#[must_use]
pub fn memlock_warning_in(root: &Path, cores: usize) -> Option<String> {
    let limits = fs::read_to_string(root.join("proc/self/limits")).ok()?;
    let line = limits.lines().find(|line| line.starts_with("Max locked memory"))?;
    // "Max locked memory   <soft>   <hard>   bytes": the soft limit is the one enforced.
    let soft = line.trim_start_matches("Max locked memory").split_whitespace().next()?;
    if soft == "unlimited" {
        return None;
    }
    let soft_bytes: u64 = soft.parse().ok()?;
    let cores_count = u64::try_from(cores).ok()?;
    let need_bytes = MEMLOCK_PER_CORE_BYTES.saturating_mul(cores_count);
    if soft_bytes >= need_bytes {
        return None;
    }
    Some(format!(
        "RLIMIT_MEMLOCK is {} KiB, below the {} KiB that {} cores need for io_uring \
         (512 KiB each); raise it (LimitMEMLOCK=infinity or ulimit -l unlimited), see {}",
        soft_bytes / 1024,
        need_bytes / 1024,
        cores,
        PLAYBOOK
    ))
}

fn swappiness_warning(root: &Path) -> Option<String> {
    let swappiness: u64 = read_trimmed(&root.join("proc/sys/vm/swappiness"))?.parse().ok()?;
    if swappiness <= SWAPPINESS_MAX {
        return None;
    }
    Some(format!(
        "vm.swappiness is {swappiness} (above {SWAPPINESS_MAX}): the kernel may swap out shard \
         memory and stall a core; set 1, see {PLAYBOOK}"
    ))
}

fn transparent_huge_pages_warning(root: &Path) -> Option<String> {
    let enabled = read_trimmed(&root.join("sys/kernel/mm/transparent_hugepage/enabled"))?;
    if selected_word(&enabled) != "always" {
        return None;
    }
    Some(format!(
        "transparent huge pages are 'always': page faults may stall a shard in compaction; \
         set madvise, see {PLAYBOOK}"
    ))
}

fn governor_warning(root: &Path) -> Option<String> {
    let cpu_dir = root.join("sys/devices/system/cpu");
    let mut slow: Vec<(u32, String)> = Vec::new();
    for entry in fs::read_dir(&cpu_dir).ok()?.flatten() {
        let name = entry.file_name();
        let Some(cpu) = name.to_str().and_then(|name| name.strip_prefix("cpu")) else {
            continue;
        };
        let Ok(cpu) = cpu.parse::<u32>() else {
            continue;
        };
        let path = entry.path().join("cpufreq/scaling_governor");
        // No cpufreq (a VM, a fixed-frequency CPU): nothing the operator can change.
        let Some(governor) = read_trimmed(&path) else {
            continue;
        };
        if governor != "performance" {
            slow.push((cpu, governor));
        }
    }
    if slow.is_empty() {
        return None;
    }
    slow.sort();
    let listed: Vec<String> =
        slow.iter().map(|(cpu, governor)| format!("cpu{cpu} {governor}")).collect();
    Some(format!(
        "CPU frequency governor is not 'performance' ({}): cores ramp up slowly after quiet \
         spells; see {PLAYBOOK}",
        abbreviate(&listed, 4)
    ))
}

fn scheduler_warning(root: &Path, data_dir: &Path) -> Option<String> {
    let disk = data_disk(root, data_dir)?;
    let scheduler = read_trimmed(&disk.join("queue/scheduler"))?;
    if selected_word(&scheduler) != "bfq" {
        return None;
    }
    let name = disk.file_name()?.to_string_lossy().into_owned();
    Some(format!(
        "the data dir's disk {name} uses the bfq I/O scheduler, which adds latency per request; \
         use none (flash) or mq-deadline, see {PLAYBOOK}"
    ))
}

/// The sysfs directory of the whole disk that holds `data_dir` (the parent of a partition).
fn data_disk(root: &Path, data_dir: &Path) -> Option<PathBuf> {
    let dev = fs::metadata(data_dir).ok()?.dev();
    let link = root.join(format!("sys/dev/block/{}:{}", dev_major(dev), dev_minor(dev)));
    let device = fs::canonicalize(link).ok()?;
    if device.join("partition").exists() {
        return device.parent().map(Path::to_path_buf);
    }
    Some(device)
}

/// The major number of a Linux `dev_t` (glibc's `gnu_dev_major` encoding).
fn dev_major(dev: u64) -> u64 {
    ((dev >> 8) & 0xfff) | ((dev >> 32) & 0xffff_f000)
}

/// The minor number of a Linux `dev_t` (glibc's `gnu_dev_minor` encoding).
fn dev_minor(dev: u64) -> u64 {
    (dev & 0xff) | ((dev >> 12) & 0xffff_ff00)
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|value| value.trim().to_string())
}

/// The bracketed word of a sysfs selector ("always [madvise] never" gives "madvise"), or the
/// whole value when nothing is bracketed.
fn selected_word(value: &str) -> &str {
    match (value.find('['), value.find(']')) {
        (Some(open), Some(close)) if open < close => &value[open + 1..close],
        _ => value,
    }
}

/// Joins the first `shown` items and says how many more there are, to keep the line short on
/// hosts with many CPUs.
fn abbreviate(items: &[String], shown: usize) -> String {
    let mut text = items.iter().take(shown).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > shown {
        let _ = write!(text, " and {} more", items.len() - shown);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fake `/proc` + `/sys` tree and a data dir in the system temp dir, removed on drop.
    struct FakeHost {
        base: PathBuf,
    }

    impl FakeHost {
        /// A host tuned as the playbook says: no warnings.
        fn tuned() -> FakeHost {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let base = std::env::temp_dir().join(format!(
                "spate-host-check-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&base);
            let host = FakeHost { base };
            fs::create_dir_all(host.data_dir()).unwrap();
            host.write("proc/sys/vm/swappiness", "1\n");
            host.write("sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never\n");
            for cpu in 0..4 {
                host.write(
                    &format!("sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"),
                    "performance\n",
                );
            }
            // Not CPUs: cpufreq/, cpuidle/ and the online list live beside the cpuN dirs.
            host.write("sys/devices/system/cpu/online", "0-3\n");
            host.write("sys/devices/system/cpu/cpufreq/boost", "1\n");
            host.write(
                "proc/self/limits",
                "Limit                     Soft Limit           Hard Limit           Units\n\
                 Max open files            1024                 524288               files\n\
                 Max locked memory         8388608              8388608              bytes\n",
            );
            // The data dir's device: a partition of a fake disk, reached through the same
            // kind of symlink as /sys/dev/block/M:N.
            host.write(
                "sys/devices/virtual/block/fakedisk/queue/scheduler",
                "[none] mq-deadline bfq\n",
            );
            host.write("sys/devices/virtual/block/fakedisk/fakedisk1/partition", "1\n");
            let dev = fs::metadata(host.data_dir()).unwrap().dev();
            let link =
                host.root().join(format!("sys/dev/block/{}:{}", dev_major(dev), dev_minor(dev)));
            fs::create_dir_all(link.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink("../../devices/virtual/block/fakedisk/fakedisk1", &link)
                .unwrap();
            host
        }

        fn root(&self) -> PathBuf {
            self.base.join("root")
        }

        fn data_dir(&self) -> PathBuf {
            self.base.join("data")
        }

        fn write(&self, relative: &str, content: &str) {
            let path = self.root().join(relative);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }

        fn warnings(&self) -> Vec<String> {
            host_warnings(&self.root(), &self.data_dir())
        }

        /// The one warning whose text contains `needle`; fails if there is not exactly one.
        fn warning_about(&self, needle: &str) -> String {
            let matching: Vec<String> =
                self.warnings().into_iter().filter(|w| w.contains(needle)).collect();
            assert_eq!(matching.len(), 1, "want one warning about {needle:?}: {matching:?}");
            matching[0].clone()
        }
    }

    impl Drop for FakeHost {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.base);
        }
    }

    fn assert_short_and_pointing_at_playbook(warning: &str) {
        assert!(warning.ends_with(PLAYBOOK), "{warning}");
        assert!(!warning.contains('\n'), "{warning}");
        assert!(warning.len() <= 200, "{} chars: {warning}", warning.len());
    }

    #[test]
    fn tuned_host_has_no_warnings() {
        let host = FakeHost::tuned();
        assert_eq!(host.warnings(), Vec::<String>::new());
        assert_eq!(memlock_warning_in(&host.root(), 4), None);
    }

    #[test]
    fn swappiness_above_10_warns_and_10_does_not() {
        let host = FakeHost::tuned();
        host.write("proc/sys/vm/swappiness", "60\n");
        let warning = host.warning_about("vm.swappiness");
        assert!(warning.contains("is 60"), "{warning}");
        assert_short_and_pointing_at_playbook(&warning);
        host.write("proc/sys/vm/swappiness", "10\n");
        assert_eq!(host.warnings(), Vec::<String>::new());
    }

    #[test]
    fn thp_always_warns_and_madvise_or_never_does_not() {
        let host = FakeHost::tuned();
        host.write("sys/kernel/mm/transparent_hugepage/enabled", "[always] madvise never\n");
        assert_short_and_pointing_at_playbook(&host.warning_about("transparent huge pages"));
        host.write("sys/kernel/mm/transparent_hugepage/enabled", "always madvise [never]\n");
        assert_eq!(host.warnings(), Vec::<String>::new());
    }

    #[test]
    fn governor_other_than_performance_warns_and_lists_the_cpus() {
        let host = FakeHost::tuned();
        host.write("sys/devices/system/cpu/cpu2/cpufreq/scaling_governor", "powersave\n");
        host.write("sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", "schedutil\n");
        let warning = host.warning_about("governor");
        assert!(warning.contains("cpu0 schedutil, cpu2 powersave"), "{warning}");
        assert_short_and_pointing_at_playbook(&warning);
        host.write("sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", "performance\n");
        host.write("sys/devices/system/cpu/cpu2/cpufreq/scaling_governor", "performance\n");
        assert_eq!(host.warnings(), Vec::<String>::new());
    }

    #[test]
    fn governor_warning_stays_short_with_many_cpus() {
        let host = FakeHost::tuned();
        for cpu in 0..64 {
            host.write(
                &format!("sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"),
                "powersave\n",
            );
        }
        let warning = host.warning_about("governor");
        assert!(warning.contains("and 60 more"), "{warning}");
        assert_short_and_pointing_at_playbook(&warning);
    }

    #[test]
    fn missing_cpufreq_is_not_a_warning() {
        let host = FakeHost::tuned();
        fs::remove_dir_all(host.root().join("sys/devices/system/cpu/cpu1/cpufreq")).unwrap();
        assert_eq!(host.warnings(), Vec::<String>::new());
    }

    #[test]
    fn bfq_on_the_data_disk_warns() {
        let host = FakeHost::tuned();
        host.write(
            "sys/devices/virtual/block/fakedisk/queue/scheduler",
            "none mq-deadline [bfq]\n",
        );
        let warning = host.warning_about("bfq");
        assert!(warning.contains("fakedisk"), "{warning}");
        assert_short_and_pointing_at_playbook(&warning);
        host.write(
            "sys/devices/virtual/block/fakedisk/queue/scheduler",
            "none [mq-deadline] bfq\n",
        );
        assert_eq!(host.warnings(), Vec::<String>::new());
    }

    #[test]
    fn memlock_below_512_kib_per_core_warns() {
        let host = FakeHost::tuned();
        host.write(
            "proc/self/limits",
            "Max locked memory         65536                65536                bytes\n",
        );
        let warning = memlock_warning_in(&host.root(), 2).unwrap();
        assert!(warning.contains("64 KiB, below the 1024 KiB that 2 cores need"), "{warning}");
        assert_short_and_pointing_at_playbook(&warning);
        host.write(
            "proc/self/limits",
            "Max locked memory         1048576              1048576              bytes\n",
        );
        assert_eq!(memlock_warning_in(&host.root(), 2), None);
        assert!(memlock_warning_in(&host.root(), 3).is_some());
        host.write(
            "proc/self/limits",
            "Max locked memory         unlimited            unlimited            bytes\n",
        );
        assert_eq!(memlock_warning_in(&host.root(), 1024), None);
    }

    #[test]
    fn unreadable_tree_gives_no_warnings() {
        let empty =
            std::env::temp_dir().join(format!("spate-host-check-empty-{}", std::process::id()));
        assert_eq!(host_warnings(&empty, &empty), Vec::<String>::new());
        assert_eq!(memlock_warning_in(&empty, 4), None);
    }

    #[test]
    fn real_host_checks_do_not_panic() {
        // Whatever this machine's settings are, reading them must not fail or panic.
        let _ = host_warnings(Path::new("/"), &std::env::temp_dir());
        let _ = memlock_warning(1);
    }

    #[test]
    fn dev_t_encoding_round_trips() {
        // makedev(259, 1) for an NVMe partition and makedev(8, 17) for sdb1, as glibc encodes.
        assert_eq!((dev_major(0x10301), dev_minor(0x10301)), (259, 1));
        assert_eq!((dev_major(0x811), dev_minor(0x811)), (8, 17));
        let big = (0x1234u64 & 0xfff) << 8 | (0x1234u64 & !0xfff) << 32 | 0x56;
        assert_eq!((dev_major(big), dev_minor(big)), (0x1234, 0x56));
    }

    #[test]
    fn selected_word_reads_sysfs_selectors() {
        assert_eq!(selected_word("always [madvise] never"), "madvise");
        assert_eq!(selected_word("none"), "none");
        assert_eq!(selected_word("[none] mq-deadline"), "none");
    }
}
