//! `cargo xtask fetch-data ml-1m|ml-100k` (this crate's binary): downloads the official zip from
//! GroupLens into `data/`, verifies it, and converts it to the layout the shipped pipelines read.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use clap::Parser;
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     args: recall_fetch::Args,
//! }
//! let cli = Cli::parse_from(["fetch", "ml-100k", "--dir", "datasets"]);
//! recall_fetch::run(&cli.args)?; // datasets/ml-100k/u.data ...
//! # Ok(())
//! # }
//! ```
//!
//! Verification: against `--sha256 HEX` when given, else against the MD5 that GroupLens
//! publishes beside each zip (`<url>.md5`). The SHA-256 of what was verified is recorded in
//! `data/<name>/SOURCE.json` so later fetches can pin it. Every step writes to temporary names
//! and renames at the end: an interrupted fetch leaves no half dataset behind.
//!
//! Conversion: ml-1m's `ratings.dat` becomes `interactions.parquet` (`user_id`, `movie_id`,
//! `rating`, `timestamp`, `seq` in each user's time order) beside `users.dat` and `movies.dat`,
//! the layout of `pipelines/ml-1m*.toml`; ml-100k is used as released (`u.data`, `u.user`,
//! `u.item`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use md5::Digest;

/// Datasets `fetch-data` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dataset {
    /// MovieLens 1M (about 6 MB zipped).
    #[value(name = "ml-1m")]
    Ml1m,
    /// MovieLens 100K (about 5 MB zipped).
    #[value(name = "ml-100k")]
    Ml100k,
}

impl Dataset {
    fn name(self) -> &'static str {
        match self {
            Dataset::Ml1m => "ml-1m",
            Dataset::Ml100k => "ml-100k",
        }
    }

    fn official_url(self) -> String {
        format!(
            "https://files.grouplens.org/datasets/movielens/{}.zip",
            self.name()
        )
    }

    /// Files of the release the conversion needs.
    fn required(self) -> &'static [&'static str] {
        match self {
            Dataset::Ml1m => &["ratings.dat", "users.dat", "movies.dat"],
            Dataset::Ml100k => &["u.data", "u.user", "u.item"],
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which dataset.
    #[arg(value_enum)]
    dataset: Dataset,
    /// Directory to put it in (as `<dir>/<dataset>/`); the pipelines' `RECALL_DATA_DIR`.
    #[arg(long, default_value = "data")]
    dir: PathBuf,
    /// Download from here instead of GroupLens (a mirror, or a local server in tests).
    #[arg(long)]
    url: Option<String>,
    /// Expected SHA-256 of the zip; without it the MD5 GroupLens publishes at `<url>.md5` is
    /// checked.
    #[arg(long)]
    sha256: Option<String>,
    /// Replace an existing `<dir>/<dataset>/`.
    #[arg(long)]
    force: bool,
}

fn get(url: &str) -> Result<Vec<u8>> {
    tracing::info!("downloading {url}");
    let response = ureq::get(url)
        .call()
        .with_context(|| format!("cannot download {url}"))?;
    let mut bytes = Vec::new();
    response
        .into_body()
        .into_reader()
        .read_to_end(&mut bytes)
        .with_context(|| format!("download of {url} was cut off"))?;
    Ok(bytes)
}

/// The 32-hex-digit digest in a `.md5` file (`MD5 (x.zip) = HEX` or `HEX  x.zip`).
fn parse_md5(text: &str) -> Option<String> {
    text.split(|c: char| !c.is_ascii_hexdigit())
        .find(|t| t.len() == 32)
        .map(str::to_lowercase)
}

fn verify(zip: &[u8], url: &str, sha256: Option<&str>) -> Result<(String, String)> {
    let sha = recall_core::checksum::sha256_bytes(zip);
    let md5 = format!("{:x}", md5::Md5::digest(zip));
    match sha256 {
        Some(expected) => {
            if !sha.eq_ignore_ascii_case(expected.trim()) {
                bail!(
                    "{url}: SHA-256 is {sha}, expected {expected}: the download is corrupt or not the release; nothing was written"
                );
            }
        }
        None => {
            let md5_url = format!("{url}.md5");
            let text = get(&md5_url).with_context(|| {
                format!("cannot fetch the published checksum {md5_url}: pass --sha256 HEX to verify against a known digest instead")
            })?;
            let expected = parse_md5(&String::from_utf8_lossy(&text))
                .with_context(|| format!("{md5_url} holds no MD5 digest"))?;
            if md5 != expected {
                bail!(
                    "{url}: MD5 is {md5}, GroupLens publishes {expected}: the download is corrupt; nothing was written"
                );
            }
        }
    }
    Ok((sha, md5))
}

/// Extracts the release's files (any folder inside the zip) into `into`.
fn extract(zip: &[u8], dataset: Dataset, into: &Path) -> Result<()> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip))
        .context("the download is not a readable zip archive")?;
    std::fs::create_dir_all(into)?;
    let mut found = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i)?;
        if entry.is_dir() {
            continue;
        }
        let Some(name) = entry
            .enclosed_name()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        else {
            continue;
        };
        if name.starts_with('.') || entry.name()?.contains("__MACOSX") {
            continue;
        }
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .with_context(|| format!("zip entry {name} is corrupt"))?;
        std::fs::write(into.join(&name), bytes)?;
        found.push(name);
    }
    let missing: Vec<_> = dataset
        .required()
        .iter()
        .filter(|f| !found.iter().any(|n| n == *f))
        .collect();
    if !missing.is_empty() {
        bail!(
            "the zip lacks {missing:?} (it holds {found:?}): not a {} release",
            dataset.name()
        );
    }
    Ok(())
}

/// ml-1m: `ratings.dat` to `interactions.parquet` in the shipped pipelines' layout.
fn convert_ml_1m(dir: &Path) -> Result<()> {
    let ratings = dir.join("ratings.dat");
    let events = recall_data::movielens::read_ml_1m_ratings(&ratings)?;
    let (interactions, stats) = recall_data::dataset::Interactions::from_events(&ratings, events)?;
    let batch = interactions.to_batch()?;
    // The pipelines read the item column as `movie_id`, as in the release.
    let fields: Vec<arrow_schema::Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| {
            if f.name() == recall_core::columns::ITEM_ID {
                f.as_ref().clone().with_name("movie_id")
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    let batch = arrow_array::RecordBatch::try_new(
        Arc::new(arrow_schema::Schema::new(fields)),
        batch.columns().to_vec(),
    )?;
    recall_core::write::write_parquet(&dir.join("interactions.parquet"), &batch, &[])?;
    tracing::info!(
        interactions = stats.interactions,
        users = stats.users,
        items = stats.items,
        "converted ratings.dat"
    );
    Ok(())
}

pub fn run(args: &Args) -> Result<()> {
    let name = args.dataset.name();
    let target = args.dir.join(name);
    if target.exists() && !args.force {
        bail!("{} exists; pass --force to replace it", target.display());
    }
    let url = args
        .url
        .clone()
        .unwrap_or_else(|| args.dataset.official_url());
    let zip = get(&url)?;
    let (sha256, md5) = verify(&zip, &url, args.sha256.as_deref())?;
    tracing::info!(sha256 = sha256.as_str(), "verified {url}");

    let staging = args
        .dir
        .join(format!(".{name}.fetch-{}", std::process::id()));
    let result = (|| -> Result<()> {
        extract(&zip, args.dataset, &staging)?;
        if args.dataset == Dataset::Ml1m {
            convert_ml_1m(&staging)?;
        }
        let source =
            serde_json::json!({ "url": url, "sha256": sha256, "md5": md5, "bytes": zip.len() });
        std::fs::write(
            staging.join("SOURCE.json"),
            serde_json::to_vec_pretty(&source)?,
        )?;
        if target.exists() {
            std::fs::remove_dir_all(&target)
                .with_context(|| format!("cannot replace {}", target.display()))?;
        }
        std::fs::rename(&staging, &target)
            .with_context(|| format!("cannot move the dataset into {}", target.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result?;
    tracing::info!("{name} is ready in {}", target.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    /// Serves `files` (path -> body) over HTTP/1.1 on 127.0.0.1 until the test process ends.
    fn serve(files: Vec<(String, Vec<u8>)>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut buf = [0u8; 4096];
                let n = stream.read(&mut buf).unwrap();
                let request = String::from_utf8_lossy(&buf[..n]);
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let (status, body) = match files.iter().find(|(p, _)| *p == path) {
                    Some((_, body)) => ("200 OK", body.clone()),
                    None => ("404 Not Found", b"not found".to_vec()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                stream.write_all(head.as_bytes()).unwrap();
                stream.write_all(&body).unwrap();
            }
        });
        format!("http://{addr}")
    }

    /// A small zip in the ml-1m release layout (made-up rows, not MovieLens data).
    fn small_ml_1m_zip() -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        {
            let mut zip = zip::ZipWriter::new(&mut out);
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            let files = [
                (
                    "ml-1m/ratings.dat",
                    "1::10::5::300\n1::11::3::100\n2::10::4::200\n2::12::2::250\n1::12::4::200\n",
                ),
                (
                    "ml-1m/users.dat",
                    "1::F::1::10::48067\n2::M::56::16::70072\n",
                ),
                (
                    "ml-1m/movies.dat",
                    "10::A (1995)::Comedy\n11::B (1995)::Drama|Comedy\n12::C (1996)::Drama\n",
                ),
                ("__MACOSX/ml-1m/._ratings.dat", "junk"),
            ];
            for (name, body) in files {
                zip.start_file(name, options).unwrap();
                zip.write_all(body.as_bytes()).unwrap();
            }
            zip.finish().unwrap();
        }
        out.into_inner()
    }

    fn args(dir: &Path, url: String, sha256: Option<String>) -> Args {
        Args {
            dataset: Dataset::Ml1m,
            dir: dir.to_owned(),
            url: Some(url),
            sha256,
            force: false,
        }
    }

    #[test]
    fn fetches_verifies_and_converts_from_a_local_server() {
        let zip = small_ml_1m_zip();
        let md5 = format!("{:x}", md5::Md5::digest(&zip));
        let base = serve(vec![
            ("/ml-1m.zip".into(), zip.clone()),
            (
                "/ml-1m.zip.md5".into(),
                format!("MD5 (ml-1m.zip) = {md5}\n").into_bytes(),
            ),
        ]);
        let dir = tempfile::tempdir().unwrap();
        run(&args(dir.path(), format!("{base}/ml-1m.zip"), None)).unwrap();
        let out = dir.path().join("ml-1m");
        let t = recall_core::Table::read(&out.join("interactions.parquet")).unwrap();
        assert_eq!(t.ints("user_id").unwrap(), [1, 1, 1, 2, 2]);
        // User 1 in time order: 11 (t=100), 12 (t=200), 10 (t=300).
        assert_eq!(t.ints("movie_id").unwrap(), [11, 12, 10, 10, 12]);
        assert_eq!(t.ints("seq").unwrap(), [0, 1, 2, 0, 1]);
        assert!(out.join("users.dat").exists() && out.join("movies.dat").exists());
        let source = std::fs::read_to_string(out.join("SOURCE.json")).unwrap();
        assert!(source.contains(&recall_core::checksum::sha256_bytes(&zip)));
        // The shipped ML-1M pipeline's ingest reads the converted layout.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let text = std::fs::read_to_string(root.join("pipelines/ml-1m.toml"))
            .unwrap()
            .replace("${RECALL_DATA_DIR}", &dir.path().to_string_lossy());
        let config = recall_pipeline::config::parse(&text, Path::new("ml-1m.toml")).unwrap();
        let dataset = recall_data::ingest(&config.ingest).unwrap();
        assert_eq!(dataset.stats.interactions, 5);
        // An existing dataset is kept unless --force.
        let err = run(&args(dir.path(), format!("{base}/ml-1m.zip"), None)).unwrap_err();
        assert!(format!("{err:#}").contains("--force"), "{err:#}");
    }

    #[test]
    fn a_wrong_checksum_or_a_broken_zip_writes_nothing() {
        let zip = small_ml_1m_zip();
        let base = serve(vec![
            ("/ml-1m.zip".into(), zip.clone()),
            ("/bad.zip".into(), zip[..zip.len() / 2].to_vec()),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let wrong = Some("0".repeat(64));
        let err = run(&args(dir.path(), format!("{base}/ml-1m.zip"), wrong)).unwrap_err();
        assert!(format!("{err:#}").contains("SHA-256 is"), "{err:#}");
        // No published .md5 on this server: the error says how to verify instead.
        let err = run(&args(dir.path(), format!("{base}/ml-1m.zip"), None)).unwrap_err();
        assert!(format!("{err:#}").contains("--sha256"), "{err:#}");
        let half = recall_core::checksum::sha256_bytes(&zip[..zip.len() / 2]);
        let err = run(&args(dir.path(), format!("{base}/bad.zip"), Some(half))).unwrap_err();
        assert!(format!("{err:#}").contains("not a readable zip"), "{err:#}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn md5_files_in_both_layouts_parse() {
        let hex = "c4d9eecfca2ab87c1945afe126590906";
        assert_eq!(
            parse_md5(&format!("MD5 (ml-1m.zip) = {hex}\n")).unwrap(),
            hex
        );
        assert_eq!(parse_md5(&format!("{hex}  ml-1m.zip")).unwrap(), hex);
        assert!(parse_md5("nothing here").is_none());
    }
}
