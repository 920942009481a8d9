//! The actions/runner releases API: which versions exist, when each was published, where its
//! tarballs are, and the SHA-256 of each (from the checksum blocks of the release notes).
//!
//! Only the answer's fields krunner uses are read; every asset URL comes from the answer, so a
//! mirror or an air-gapped server that serves the same JSON works unchanged.

use std::time::Duration;

use serde::Deserialize;

use super::{Arch, RunnerError, Version};

/// GitHub's own releases listing of the actions runner.
pub const DEFAULT_RELEASES_URL: &str = "https://api.github.com/repos/actions/runner/releases";

/// How long a release check may take in all (listing or download headers).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// GitHub refuses a runner this long after a newer release was published.
pub const ACCEPTED_LAG: Duration = Duration::from_secs(30 * 24 * 3600);

/// One release as the API gives it.
#[derive(Debug, Clone, Deserialize)]
struct ApiRelease {
    tag_name: String,
    #[serde(default)]
    draft: bool,
    #[serde(default)]
    prerelease: bool,
    #[serde(default)]
    published_at: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    assets: Vec<ApiAsset>,
}

#[derive(Debug, Clone, Deserialize)]
struct ApiAsset {
    name: String,
    browser_download_url: String,
}

/// A published (not draft, not pre-release) runner release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Its version.
    pub version: Version,
    /// Unix seconds of publication (0 when the answer has none).
    pub published_at: u64,
    /// The release notes, which hold the checksums.
    pub body: String,
    /// (file name, download URL) of each asset.
    pub assets: Vec<(String, String)>,
}

/// What to download for one architecture: the asset, its URL and its expected SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    /// The release.
    pub version: Version,
    /// The asset's file name.
    pub asset: String,
    /// Where to get it.
    pub url: String,
    /// Its SHA-256, lower-case hex, from the release notes.
    pub sha256: String,
}

impl Release {
    /// The tarball for `arch` with its checksum; an error names the version and the asset
    /// when either is missing.
    pub fn download(&self, arch: Arch) -> Result<Download, RunnerError> {
        let asset = format!("actions-runner-{}-{}.tar.gz", arch.platform(), self.version);
        let url = self
            .assets
            .iter()
            .find(|(n, _)| *n == asset)
            .map(|(_, u)| u.clone())
            .ok_or_else(|| RunnerError::MissingAsset {
                version: self.version,
                asset: asset.clone(),
            })?;
        let sha256 =
            checksum(&self.body, arch.platform()).ok_or_else(|| RunnerError::NoChecksum {
                version: self.version,
                asset: asset.clone(),
            })?;
        Ok(Download {
            version: self.version,
            asset,
            url,
            sha256,
        })
    }
}

/// The SHA-256 of `platform`'s tarball in release notes: the text between
/// `<!-- BEGIN SHA linux-x64 -->` and `<!-- END SHA linux-x64 -->`, if it is 64 hex digits.
pub fn checksum(body: &str, platform: &str) -> Option<String> {
    let begin = format!("<!-- BEGIN SHA {platform} -->");
    let end = format!("<!-- END SHA {platform} -->");
    let start = body.find(&begin)? + begin.len();
    let len = body[start..].find(&end)?;
    let sum = body[start..start + len].trim().to_ascii_lowercase();
    (sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit())).then_some(sum)
}

/// Parses a listing; drafts, pre-releases and tags that are no version are left out. Newest
/// version first.
pub fn parse_listing(bytes: &[u8]) -> Result<Vec<Release>, String> {
    let list: Vec<ApiRelease> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let mut out: Vec<Release> = list
        .into_iter()
        .filter(|r| !r.draft && !r.prerelease)
        .filter_map(|r| {
            Some(Release {
                version: r.tag_name.parse().ok()?,
                published_at: r
                    .published_at
                    .as_deref()
                    .and_then(parse_rfc3339)
                    .unwrap_or(0),
                body: r.body.unwrap_or_default(),
                assets: r
                    .assets
                    .into_iter()
                    .map(|a| (a.name, a.browser_download_url))
                    .collect(),
            })
        })
        .collect();
    out.sort_by_key(|r| std::cmp::Reverse(r.version));
    Ok(out)
}

/// Unix seconds of an RFC 3339 UTC time as GitHub writes it (`2026-11-01T12:00:00Z`).
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    // Fractions of a second, when present, do not matter here.
    let time = time.split('.').next()?;
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (h, mi, sec) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + mi * 60 + sec).ok()
}

/// Which release `wanted` means in `releases` (newest first): the newest for `None`.
pub fn pick(releases: &[Release], wanted: Option<Version>) -> Option<&Release> {
    match wanted {
        None => releases.first(),
        Some(v) => releases.iter().find(|r| r.version == v),
    }
}

/// Whether GitHub still accepts runner `version` at `now`: it refuses a runner once a newer
/// release has been out for [`ACCEPTED_LAG`]. Returns the newer release that makes it too old.
pub fn too_old(releases: &[Release], version: Version, now: u64) -> Option<&Release> {
    releases
        .iter()
        .filter(|r| r.version > version && r.published_at > 0)
        .min_by_key(|r| r.published_at)
        .filter(|r| now.saturating_sub(r.published_at) > ACCEPTED_LAG.as_secs())
}

/// An HTTP client for the releases API and its downloads (no credentials: the listing is
/// public, and a token for one GitHub server must not travel to another).
pub fn client() -> Result<reqwest::Client, RunnerError> {
    reqwest::Client::builder()
        .user_agent(concat!("krunner/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(20))
        .build()
        .map_err(|e| RunnerError::Http {
            url: DEFAULT_RELEASES_URL.into(),
            reason: e.to_string(),
        })
}

/// Reads the first page of the listing at `url` (the newest releases: enough to find the
/// latest and any version a user pins within the last few months).
pub async fn fetch(http: &reqwest::Client, url: &str) -> Result<Vec<Release>, RunnerError> {
    let err = |reason: String| RunnerError::Http {
        url: url.to_string(),
        reason,
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let resp = http
        .get(format!("{url}{sep}per_page=100"))
        .header("Accept", "application/vnd.github+json")
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .map_err(|e| err(crate::error_chain(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(err(format!("the server answered {status}")));
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| err(crate::error_chain(&e)))?;
    parse_listing(&body).map_err(|e| err(format!("not a releases listing: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUM: &str = "29fc8cf2dab4c195bb147384e7e2c94cfd4d4022c793b346a6175435265aa278";

    fn listing() -> String {
        serde_json::json!([
            {"tag_name": "v2.331.0-rc1", "prerelease": true, "published_at": "2026-11-20T00:00:00Z", "assets": []},
            {"tag_name": "v2.329.0", "published_at": "2026-09-01T00:00:00Z", "body": "", "assets": []},
            {"tag_name": "v2.330.0", "published_at": "2026-10-01T10:00:00Z",
             "body": format!("notes\n- actions-runner-linux-x64-2.330.0.tar.gz <!-- BEGIN SHA linux-x64 -->{SUM}<!-- END SHA linux-x64 -->\n- arm64 <!-- BEGIN SHA linux-arm64 -->nothex<!-- END SHA linux-arm64 -->"),
             "assets": [
                {"name": "actions-runner-linux-x64-2.330.0.tar.gz", "browser_download_url": "http://m/x64"},
                {"name": "actions-runner-linux-arm64-2.330.0.tar.gz", "browser_download_url": "http://m/arm64"}
             ]},
            {"tag_name": "nightly", "published_at": "2026-10-01T10:00:00Z", "assets": []},
            {"tag_name": "v2.328.0", "draft": true, "assets": []}
        ])
        .to_string()
    }

    #[test]
    fn the_listing_keeps_published_versions_newest_first() {
        let r = parse_listing(listing().as_bytes()).unwrap();
        let v: Vec<String> = r.iter().map(|r| r.version.to_string()).collect();
        assert_eq!(v, ["2.330.0", "2.329.0"]);
        assert_eq!(r[0].published_at, 1_790_848_800);
        assert!(parse_listing(b"{\"message\": \"Not Found\"}").is_err());
    }

    #[test]
    fn downloads_name_the_asset_and_need_a_checksum() {
        let r = parse_listing(listing().as_bytes()).unwrap();
        let d = r[0].download(Arch::X64).unwrap();
        assert_eq!(d.asset, "actions-runner-linux-x64-2.330.0.tar.gz");
        assert_eq!((d.url.as_str(), d.sha256.as_str()), ("http://m/x64", SUM));
        // arm64's block holds no checksum; 2.329.0 has no assets at all.
        let e = r[0].download(Arch::Arm64).unwrap_err().to_string();
        assert!(
            e.contains("2.330.0") && e.contains("actions-runner-linux-arm64-2.330.0.tar.gz"),
            "{e}"
        );
        let e = r[1].download(Arch::X64).unwrap_err().to_string();
        assert!(e.contains("2.329.0") && e.contains("no asset"), "{e}");
    }

    #[test]
    fn pick_and_age() {
        let r = parse_listing(listing().as_bytes()).unwrap();
        assert_eq!(pick(&r, None).unwrap().version.to_string(), "2.330.0");
        assert_eq!(
            pick(&r, Some("2.329.0".parse().unwrap()))
                .unwrap()
                .published_at,
            parse_rfc3339("2026-09-01T00:00:00Z").unwrap()
        );
        assert!(pick(&r, Some("2.1.0".parse().unwrap())).is_none());
        let published = r[0].published_at;
        let old: Version = "2.329.0".parse().unwrap();
        assert!(too_old(&r, old, published + 29 * 86_400).is_none());
        assert_eq!(
            too_old(&r, old, published + 31 * 86_400).map(|r| r.version),
            Some(r[0].version)
        );
        assert!(too_old(&r, r[0].version, published + 400 * 86_400).is_none());
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:01Z"), Some(951_868_801));
        assert_eq!(parse_rfc3339("2026-11-30T18:00:00.5Z"), Some(1_796_061_600));
        for bad in [
            "2026-13-01T00:00:00Z",
            "2026-11-30 18:00:00",
            "x",
            "2026-11-30T18:00:00",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn checksums_must_be_64_hex_digits() {
        let b = format!(
            "<!-- BEGIN SHA linux-x64 --> {} <!-- END SHA linux-x64 -->",
            SUM.to_uppercase()
        );
        assert_eq!(checksum(&b, "linux-x64").as_deref(), Some(SUM));
        assert_eq!(checksum(&b, "linux-arm64"), None);
        assert_eq!(
            checksum(
                "<!-- BEGIN SHA linux-x64 -->abc<!-- END SHA linux-x64 -->",
                "linux-x64"
            ),
            None
        );
    }
}
