//! The model directory: `models/<version>/{manifest.json, model.bin}` plus a `CURRENT` file
//! naming the live version.
//!
//! Publishing is atomic: a version is written under a hidden `.building-*` directory, fsynced,
//! renamed into place, and only then is `CURRENT` replaced (write `CURRENT.tmp`, fsync, rename).
//! A build killed at any point leaves `CURRENT` and the version it names untouched.
//!
//! Architecture Invariant: nothing but [`publish`] (last, after the version is complete) and
//! [`promote`] (after the version loaded and verified) writes `CURRENT`.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use super::similar::{HNSW_FILES, SimilarIndex};
use super::{Model, ModelData};
use crate::build::BuildReport;
use crate::error::StoreError;

pub const CURRENT: &str = "CURRENT";
pub const MANIFEST: &str = "manifest.json";
pub const MODEL_BIN: &str = "model.bin";
/// Bumped when the binary layout of `model.bin` changes; a server refuses other versions.
pub const FORMAT_VERSION: u32 = 6;

/// One file of a model version and its checksum.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileChecksum {
    pub name: String,
    pub bytes: u64,
    /// XXH3-128 of the content, 32 hex digits. It catches torn copies and corrupted disks at
    /// tens of GB/s; it is not a signature (anyone who can write the model directory can
    /// write the manifest too). SHA-256 took 15% of a load (RESULTS.md, session 10).
    pub xxh3_128: String,
}

/// What a model version is and where it came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub version: String,
    pub format_version: u32,
    pub cobuy_version: String,
    /// RFC 3339.
    pub built_at: String,
    /// The mapping and build configuration, as validated.
    pub config: serde_json::Value,
    pub report: BuildReport,
    pub files: Vec<FileChecksum>,
}

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard()
}

/// A fresh version name: UTC build time, sortable, with a suffix if taken.
pub fn new_version_name(root: &Path) -> String {
    let base = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    if !root.join(&base).exists() {
        return base;
    }
    (2..)
        .map(|k| format!("{base}-{k}"))
        .find(|name| !root.join(name).exists())
        .unwrap_or(base)
}

/// Writes a model version aside and publishes it as `CURRENT`, building its similarity index
/// first. Returns the version directory.
pub fn publish(
    root: &Path,
    data: &ModelData,
    config: serde_json::Value,
    report: &BuildReport,
) -> Result<PathBuf, StoreError> {
    let index = SimilarIndex::build(&data.embeddings, data.config.hnsw_min_items);
    publish_with_index(root, data, &index, config, report)
}

/// [`publish`] with an index built beforehand (a graph index is dumped beside `model.bin`).
pub fn publish_with_index(
    root: &Path,
    data: &ModelData,
    index: &SimilarIndex,
    config: serde_json::Value,
    report: &BuildReport,
) -> Result<PathBuf, StoreError> {
    fs::create_dir_all(root).map_err(StoreError::io(root))?;
    let version = new_version_name(root);
    let staging = root.join(format!(".building-{version}-{}", std::process::id()));
    fs::create_dir_all(&staging).map_err(StoreError::io(&staging))?;

    let bin_path = staging.join(MODEL_BIN);
    let checksum = write_hashed(&bin_path, |w| {
        bincode::serde::encode_into_std_write(data, w, bincode_config())
            .map(|_| ())
            .map_err(|e| std::io::Error::other(e.to_string()))
    })?;
    let mut files = vec![FileChecksum {
        name: MODEL_BIN.into(),
        bytes: checksum.0,
        xxh3_128: checksum.1,
    }];
    for path in index.dump(&staging)? {
        files.push(checksum_of(&path)?);
    }
    let manifest = Manifest {
        version: version.clone(),
        format_version: FORMAT_VERSION,
        cobuy_version: env!("CARGO_PKG_VERSION").to_owned(),
        built_at: chrono::Utc::now().to_rfc3339(),
        config,
        report: report.clone(),
        files,
    };
    let manifest_path = staging.join(MANIFEST);
    write_hashed(&manifest_path, |w| {
        serde_json::to_writer_pretty(w, &manifest).map_err(std::io::Error::other)
    })?;
    sync_dir(&staging)?;

    let final_dir = root.join(&version);
    fs::rename(&staging, &final_dir).map_err(StoreError::io(&final_dir))?;
    sync_dir(root)?;
    set_current(root, &version)?;
    tracing::info!(version = %version, dir = %final_dir.display(), "model published");
    Ok(final_dir)
}

/// Makes an existing version live: verifies that `root/<version>` loads (manifest, checksums,
/// structure), then points `CURRENT` at it. For a version built elsewhere and copied in, or a
/// roll back to an earlier one. A version that does not load leaves `CURRENT` untouched.
pub fn promote(root: &Path, version: &str) -> Result<(), StoreError> {
    let plain_name = !version.is_empty()
        && version != ".."
        && !version.starts_with('.')
        && !version.contains(['/', '\\']);
    if !plain_name {
        return Err(StoreError::Invalid {
            path: root.to_path_buf(),
            what: format!("{version:?} is not a version name (a directory under the model root)"),
        });
    }
    drop(load_version(&root.join(version))?);
    set_current(root, version)
}

/// Points `CURRENT` at `version` atomically.
pub fn set_current(root: &Path, version: &str) -> Result<(), StoreError> {
    let tmp = root.join(format!("{CURRENT}.tmp-{}", std::process::id()));
    {
        let mut f = File::create(&tmp).map_err(StoreError::io(&tmp))?;
        writeln!(f, "{version}").map_err(StoreError::io(&tmp))?;
        f.sync_all().map_err(StoreError::io(&tmp))?;
    }
    let current = root.join(CURRENT);
    fs::rename(&tmp, &current).map_err(StoreError::io(&current))?;
    sync_dir(root)
}

/// The version `CURRENT` names.
pub fn current_version(root: &Path) -> Result<String, StoreError> {
    let path = root.join(CURRENT);
    let text = fs::read_to_string(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => StoreError::NoCurrent {
            path: root.to_path_buf(),
        },
        _ => StoreError::Io {
            path: path.clone(),
            source: e,
        },
    })?;
    let version = text.trim();
    if version.is_empty() || version.contains('/') || version.starts_with('.') {
        return Err(StoreError::Invalid {
            path,
            what: format!("CURRENT names {version:?}, not a version"),
        });
    }
    Ok(version.to_owned())
}

/// Loads the version `CURRENT` names.
pub fn load_current(root: &Path) -> Result<Model, StoreError> {
    let version = current_version(root)?;
    load_version(&root.join(version))
}

/// Reads a version's manifest.
pub fn read_manifest(dir: &Path) -> Result<Manifest, StoreError> {
    let path = dir.join(MANIFEST);
    let text = fs::read_to_string(&path).map_err(StoreError::io(&path))?;
    serde_json::from_str(&text).map_err(|e| StoreError::Decode {
        path,
        what: e.to_string(),
    })
}

/// Loads and verifies one version directory.
pub fn load_version(dir: &Path) -> Result<Model, StoreError> {
    let manifest = read_manifest(dir)?;
    if manifest.format_version != FORMAT_VERSION {
        return Err(StoreError::Invalid {
            path: dir.to_path_buf(),
            what: format!(
                "format version {} (this cobuy reads {FORMAT_VERSION})",
                manifest.format_version
            ),
        });
    }
    if !manifest.files.iter().any(|f| f.name == MODEL_BIN) {
        return Err(StoreError::Invalid {
            path: dir.to_path_buf(),
            what: format!("manifest lists no {MODEL_BIN}"),
        });
    }
    let mut bin = None;
    for expected in &manifest.files {
        if expected.name.contains('/') || expected.name.starts_with('.') {
            return Err(StoreError::Invalid {
                path: dir.to_path_buf(),
                what: format!("manifest names the file {:?}", expected.name),
            });
        }
        let path = dir.join(&expected.name);
        let keep = expected.name == MODEL_BIN;
        let content = read_verified(&path, expected, keep)?;
        if keep {
            bin = Some(content);
        }
    }
    let bin_path = dir.join(MODEL_BIN);
    let bytes = bin.ok_or_else(|| StoreError::Invalid {
        path: dir.to_path_buf(),
        what: format!("manifest lists no {MODEL_BIN}"),
    })?;
    let (data, _): (ModelData, usize) = bincode::serde::decode_from_slice(&bytes, bincode_config())
        .map_err(|e| StoreError::Decode {
            path: bin_path.clone(),
            what: e.to_string(),
        })?;
    drop(bytes);
    validate(&data).map_err(|what| StoreError::Invalid {
        path: dir.to_path_buf(),
        what,
    })?;
    let has_graph = HNSW_FILES
        .iter()
        .all(|f| manifest.files.iter().any(|m| &m.name == f));
    let index = if has_graph {
        SimilarIndex::load(dir, &data.embeddings)?
    } else {
        SimilarIndex::build(&data.embeddings, data.config.hnsw_min_items)
    };
    Ok(Model::with_index(manifest.version, data, index))
}

/// Structural checks that keep every index in bounds at request time.
fn validate(data: &ModelData) -> Result<(), String> {
    let n = data.items.len();
    let items = &data.items;
    let same = [
        items.titles.len(),
        items.category.len(),
        items.brand.len(),
        items.price.len(),
        items.available.len(),
        items.replenishable.len(),
        items.order_count.len(),
        data.repurchase.len(),
        data.popularity.recent.len(),
    ];
    if same.iter().any(|&len| len != n) {
        return Err("item tables differ in length".into());
    }
    let e = &data.embeddings;
    if e.source.len() != n || e.vectors.len() != n * e.dim {
        return Err("embedding table does not match the items".into());
    }
    for (name, lists) in [
        ("bought_together", &data.bought_together),
        ("next_order", &data.next_order),
        ("similar_items", &data.similar_items),
    ] {
        if lists.offsets.len() != n + 1
            || lists.offsets.last().copied().unwrap_or(0) as usize != lists.entries.len()
        {
            return Err(format!("{name} offsets do not match"));
        }
        if lists.entries.iter().any(|e| e.item as usize >= n)
            || lists.offsets.windows(2).any(|w| w[0] > w[1])
        {
            return Err(format!("{name} out of range"));
        }
    }
    // Ranking reads a list head's extremes as its largest and smallest scores.
    for (name, lists) in [
        ("bought_together", &data.bought_together),
        ("next_order", &data.next_order),
    ] {
        if !lists.sorted_best_first() {
            return Err(format!("{name} lists are not sorted best first"));
        }
    }
    let c = &data.customers;
    let nc = c.ids.len();
    if c.history_offsets.len() != nc + 1
        || c.last_order_offsets.len() != nc + 1
        || c.orders.len() != nc
        || c.order_weight.len() != nc
        || c.repeat_offsets.len() != nc + 1
        || c.repeat_offsets.last().copied().unwrap_or(0) as usize != c.repeat.len()
        || c.repeat_offsets.windows(2).any(|w| w[0] > w[1])
        || c.heaviest_offsets.len() != nc + 1
        || c.heaviest_offsets.last().copied().unwrap_or(0) as usize != c.heaviest.len()
        || c.heaviest_offsets.windows(2).any(|w| w[0] > w[1])
        || c.due_offsets.len() != nc + 1
        || c.due_offsets.last().copied().unwrap_or(0) as usize != c.due.len()
        || c.due_offsets.windows(2).any(|w| w[0] > w[1])
        || c.neighbour_offsets.len() != nc + 1
        || c.neighbour_offsets.last().copied().unwrap_or(0) as usize != c.neighbour_items.len()
        || c.neighbour_offsets.windows(2).any(|w| w[0] > w[1])
    {
        return Err("customer tables differ in length".into());
    }
    if c.history.iter().any(|h| h.item as usize >= n)
        || c.last_order_items.iter().any(|&i| i as usize >= n)
        || c.neighbour_items.iter().any(|e| e.item as usize >= n)
    {
        return Err("customer history names an unknown item".into());
    }
    let n_categories = data.categories.paths.len() as u32;
    if items
        .category
        .iter()
        .any(|&k| k != super::NONE && k >= n_categories)
    {
        return Err("item category out of range".into());
    }
    Ok(())
}

/// Removes all but the newest `keep` versions (never the one `CURRENT` names) and leftovers of
/// interrupted builds. Returns the removed directories.
pub fn prune(root: &Path, keep: usize) -> Result<Vec<PathBuf>, StoreError> {
    let current = current_version(root).ok();
    let mut versions = Vec::new();
    let mut removed = Vec::new();
    for entry in fs::read_dir(root).map_err(StoreError::io(root))? {
        let entry = entry.map_err(StoreError::io(root))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if let Some(rest) = name.strip_prefix(".building-") {
            // Only remove staging directories of processes that are gone.
            let pid = rest.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|pid| {
                pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
            }) {
                fs::remove_dir_all(&path).map_err(StoreError::io(&path))?;
                removed.push(path);
            }
            continue;
        }
        if path.join(MANIFEST).exists() {
            versions.push(name);
        }
    }
    versions.sort();
    let excess = versions.len().saturating_sub(keep);
    for name in versions.into_iter().take(excess) {
        if Some(&name) == current.as_ref() {
            continue;
        }
        let path = root.join(&name);
        fs::remove_dir_all(&path).map_err(StoreError::io(&path))?;
        removed.push(path);
    }
    Ok(removed)
}

struct HashingWriter<W> {
    inner: W,
    hasher: Xxh3,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a file through `f`, fsyncs it, and returns its size and XXH3-128.
fn write_hashed(
    path: &Path,
    f: impl FnOnce(&mut HashingWriter<BufWriter<File>>) -> std::io::Result<()>,
) -> Result<(u64, String), StoreError> {
    let file = File::create(path).map_err(StoreError::io(path))?;
    let mut writer = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: Xxh3::new(),
        bytes: 0,
    };
    f(&mut writer).map_err(|e| StoreError::Encode {
        path: path.to_path_buf(),
        what: e.to_string(),
    })?;
    writer.flush().map_err(StoreError::io(path))?;
    let HashingWriter {
        inner,
        hasher,
        bytes,
    } = writer;
    let file = inner.into_inner().map_err(|e| StoreError::Io {
        path: path.to_path_buf(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(StoreError::io(path))?;
    Ok((bytes, hex128(hasher.digest128())))
}

/// Size and XXH3-128 of a file written by someone else (the HNSW dump).
fn checksum_of(path: &Path) -> Result<FileChecksum, StoreError> {
    let mut file = File::open(path).map_err(StoreError::io(path))?;
    file.sync_all().map_err(StoreError::io(path))?;
    let mut hasher = HashingWriter {
        inner: std::io::sink(),
        hasher: Xxh3::new(),
        bytes: 0,
    };
    let bytes = std::io::copy(&mut file, &mut hasher).map_err(StoreError::io(path))?;
    Ok(FileChecksum {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        bytes,
        xxh3_128: hex128(hasher.hasher.digest128()),
    })
}

/// Bytes per `read` call when loading a version: a buffer that stays resident and in cache.
const READ_CHUNK: usize = 256 << 10;

/// Reads a version's file and checks its size and checksum against the manifest; returns the
/// content if `keep`, else nothing (the graph files, which their own loader reads).
///
/// A kernel without preemption (preempt=none, as on the benchmark host) switches away from a
/// thread in a system call only where that code yields, so a swap's loading thread, at the
/// lowest priority, can still hold the serving core for as long as one call lasts. Two rules
/// keep each call short: the file is read `READ_CHUNK` bytes per call (a `read` of the whole
/// 171 MB model made woken serving threads wait 10-13 ms, RESULTS.md, session 10), and each
/// call fills the same resident buffer, from which the content is copied in user space: read
/// straight into a fresh allocation, every call also faulted in its 64 pages from inside the
/// kernel, and scheduler traces of a swap showed the loader holding the core 1.3-2.1 ms at a
/// time while the serving thread waited (RESULTS.md, session 15). A page fault in user space
/// is its own short kernel entry, after which the loader is preempted at once.
fn read_verified(path: &Path, expected: &FileChecksum, keep: bool) -> Result<Vec<u8>, StoreError> {
    let mut file = File::open(path).map_err(StoreError::io(path))?;
    let len = file.metadata().map_err(StoreError::io(path))?.len();
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    let mut content = Vec::with_capacity(if keep { len } else { 0 });
    let mut chunk = vec![0u8; READ_CHUNK.min(len).max(1)];
    let mut hasher = Xxh3::new();
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StoreError::io(path)(e)),
        };
        let read = &chunk[..n];
        hasher.update(read);
        total += n as u64;
        if keep {
            content.extend_from_slice(read);
        }
    }
    let found = hex128(hasher.digest128());
    if found != expected.xxh3_128 || total != expected.bytes {
        return Err(StoreError::Checksum {
            path: path.to_path_buf(),
            expected: expected.xxh3_128.clone(),
            found,
        });
    }
    Ok(content)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io(dir))
}

fn hex128(hash: u128) -> String {
    format!("{hash:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(content: &[u8]) -> FileChecksum {
        FileChecksum {
            name: MODEL_BIN.into(),
            bytes: content.len() as u64,
            xxh3_128: hex128(xxhash_rust::xxh3::xxh3_128(content)),
        }
    }

    #[test]
    fn a_model_whose_neighbour_lists_are_out_of_order_is_refused() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let inputs = crate::build::BuildInputs {
            orders: vec![root.join("orders.csv")],
            catalog: None,
            mapping: crate::mapping::Mapping::from_file(&root.join("orders.toml"))
                .expect("mapping"),
            ingest: crate::ingest::IngestOptions::default(),
        };
        let (mut data, _) =
            crate::build::build(&inputs, &crate::progress::Progress::hidden()).expect("build");
        assert_eq!(validate(&data), Ok(()));
        // Swap the first two entries of a list whose scores differ.
        let lists = &data.bought_together;
        let first = lists
            .offsets
            .windows(2)
            .map(|w| (w[0] as usize, w[1] as usize))
            .find(|&(a, b)| b >= a + 2 && lists.entries[a].score > lists.entries[a + 1].score)
            .map(|(a, _)| a)
            .expect("a list with two different scores");
        data.bought_together.entries.swap(first, first + 1);
        assert_eq!(
            validate(&data),
            Err("bought_together lists are not sorted best first".to_owned())
        );
        data.bought_together.entries.swap(first, first + 1);
        data.bought_together.entries[first].score = f32::NAN;
        assert!(validate(&data).is_err(), "a NaN score is refused");
    }

    #[test]
    fn a_file_read_in_chunks_hashes_like_the_whole_and_every_change_is_caught() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(MODEL_BIN);
        // Two and a half chunks, so the last read is a partial one.
        let content: Vec<u8> = (0..READ_CHUNK * 5 / 2)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        fs::write(&path, &content).expect("write");
        let expected = entry(&content);
        assert_eq!(
            read_verified(&path, &expected, true).expect("kept"),
            content
        );
        assert!(
            read_verified(&path, &expected, false)
                .expect("checked only")
                .is_empty()
        );

        // One byte changed in the second chunk.
        let mut flipped = content.clone();
        flipped[READ_CHUNK + 3] ^= 1;
        fs::write(&path, &flipped).expect("write");
        for keep in [true, false] {
            assert!(matches!(
                read_verified(&path, &expected, keep),
                Err(StoreError::Checksum { .. })
            ));
        }

        // Cut short, or grown by one byte.
        for changed in [
            &content[..READ_CHUNK * 2],
            &[&content[..], &[0]].concat()[..],
        ] {
            fs::write(&path, changed).expect("write");
            let err = read_verified(&path, &expected, true).expect_err("size differs");
            assert!(matches!(err, StoreError::Checksum { .. }), "{err}");
        }
    }
}
