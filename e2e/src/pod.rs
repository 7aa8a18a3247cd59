//! previewd's pod, as the Helm chart renders it, laid out in a folder so that the real binary
//! can run on exactly its files and variables: the image (from the repository's `Dockerfile`),
//! the ConfigMap and Secret volumes at their mount paths, and the container's environment with
//! its `secretKeyRef`s and `configMapKeyRef`s resolved.
//!
//! Every absolute path of the pod is the same path under the folder (`/etc/previewd/x` is
//! `<root>/etc/previewd/x`), and the variables that name one are rewritten by that one rule.
//! The alternative, running previewd in the pod's own root (a chroot or a mount namespace),
//! needs root; and the chart's paths are absolute by design, so relative ones cannot be had
//! without changing the chart for the test's sake. The rule is a bijection, and a variable
//! that names an absolute path nothing in the pod provides is an error here: a wrong mount
//! path or a missing ConfigMap item still fails, as it would in the cluster.
//!
//! Secrets the chart only references (`existingSecret`) are the operator's: the caller says
//! what each one holds, by what consumes it.

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What reads a Secret's key: a variable of the container, or a file of a mounted volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consumer {
    Env(String),
    File(String),
}

/// The final stage of the `Dockerfile`: what the image holds and how it starts.
#[derive(Debug, Default)]
pub struct Image {
    /// `COPY <repository path> <image path>` (not `--from`): copied from the repository.
    pub copies: Vec<(String, String)>,
    /// `COPY --from=<stage> <src> <image path>`: built files (the binary), by image path.
    pub built: Vec<String>,
    pub workdir: String,
    pub env: Vec<(String, String)>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

impl Image {
    /// Reads the instructions of the `Dockerfile`'s last stage that shape the running container.
    pub fn from_dockerfile(text: &str) -> anyhow::Result<Image> {
        let joined = text.replace("\\\n", " ");
        let stage = joined.rsplit_once("\nFROM ").map(|(_, s)| s).context("the Dockerfile has no FROM")?;
        let mut image = Image { workdir: "/".to_owned(), ..Image::default() };
        // The first line is the rest of the FROM line: the base image.
        for line in stage.lines().skip(1).map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (op, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let words: Vec<&str> = rest.split_whitespace().collect();
            match op {
                "COPY" => match words.as_slice() {
                    [from, _, dest] if from.starts_with("--from=") => image.built.push((*dest).to_owned()),
                    [src, dest] => image.copies.push(((*src).to_owned(), (*dest).to_owned())),
                    _ => bail!("Dockerfile: a COPY this test does not read: {line}"),
                },
                "WORKDIR" => image.workdir = rest.trim().to_owned(),
                "ENV" => {
                    for pair in &words {
                        let (k, v) = pair.split_once('=').with_context(|| format!("Dockerfile: ENV {pair}"))?;
                        image.env.push((k.to_owned(), v.to_owned()));
                    }
                }
                "ENTRYPOINT" => image.entrypoint = serde_json::from_str(rest).context("Dockerfile: ENTRYPOINT")?,
                "CMD" => image.cmd = serde_json::from_str(rest).context("Dockerfile: CMD")?,
                "USER" | "EXPOSE" | "ARG" | "LABEL" => {}
                _ => bail!("Dockerfile: an instruction this test does not read: {line}"),
            }
        }
        Ok(image)
    }
}

/// The container, laid out under `root`, ready to start.
#[derive(Debug)]
pub struct Pod {
    pub root: PathBuf,
    /// The image's path of the program (`command[0]`, else the ENTRYPOINT's first word).
    pub program: String,
    pub args: Vec<String>,
    /// The image's variables, then the container's (which win), in order, paths re-rooted.
    pub env: Vec<(String, String)>,
    /// The image's WORKDIR under `root` (the container sets none).
    pub workdir: PathBuf,
    /// With `readOnlyRootFilesystem`, the folders previewd may write to (mounts of an emptyDir
    /// or a claim that are not `readOnly`); `None`: anywhere.
    writable: Option<Vec<PathBuf>>,
    /// Every file under `root` once laid out.
    laid_out: Vec<PathBuf>,
}

impl Pod {
    /// Files written since the layout where the pod's filesystem is read-only (the test runs as
    /// a user who may write anywhere, so this is checked after the fact).
    pub fn written_where_read_only(&self) -> anyhow::Result<Vec<PathBuf>> {
        let Some(writable) = &self.writable else { return Ok(Vec::new()) };
        let mut now = Vec::new();
        files_under(&self.root, &mut now)?;
        Ok(now
            .into_iter()
            .filter(|f| !self.laid_out.contains(f) && !writable.iter().any(|w| f.starts_with(w)))
            .collect())
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            files_under(&entry.path(), out)?;
        } else {
            out.push(entry.path());
        }
    }
    Ok(())
}

/// The one object of `kind` named `name` among the rendered documents.
fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

/// A key of a rendered ConfigMap or Secret (`data` base64 for a Secret, `stringData` plain).
fn key_of(object: &Value, key: &str) -> anyhow::Result<Option<String>> {
    if let Some(text) = object["stringData"][key].as_str() {
        return Ok(Some(text.to_owned()));
    }
    let Some(text) = object["data"][key].as_str() else { return Ok(None) };
    if object["kind"] == "Secret" {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD.decode(text).context("a Secret's data")?;
        return Ok(Some(String::from_utf8(bytes).context("a Secret's data")?));
    }
    Ok(Some(text.to_owned()))
}

/// `path` of the pod as a path under `root`.
pub fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// Lays out the pod of the one Deployment in `docs` under `root` (an empty folder). `repo` is
/// the repository the image is built from; `secret(name, key, consumer)` gives what a Secret
/// the chart did not render holds.
pub fn materialise(
    docs: &[Value],
    repo: &Path,
    root: &Path,
    secret: &mut dyn FnMut(&str, &str, &Consumer) -> anyhow::Result<String>,
) -> anyhow::Result<Pod> {
    let dockerfile = std::fs::read_to_string(repo.join("Dockerfile")).context("reading the Dockerfile")?;
    let image = Image::from_dockerfile(&dockerfile)?;
    let deployments: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Deployment").collect();
    ensure!(deployments.len() == 1, "expected one Deployment, the chart rendered {}", deployments.len());
    let spec = &deployments[0]["spec"]["template"]["spec"];
    let containers = spec["containers"].as_array().context("the pod's containers")?;
    ensure!(containers.len() == 1, "expected one container, found {}", containers.len());
    let container = &containers[0];
    ensure!(spec["initContainers"].is_null(), "init containers are not laid out by this test");
    ensure!(container["envFrom"].is_null(), "envFrom is not laid out by this test");

    // The image's files, then the volumes over them (a mount hides what the image has there).
    for (src, dest) in &image.copies {
        copy_tree(&repo.join(src), &under(root, dest))?;
    }
    let mut mounts: Vec<&Value> = container["volumeMounts"].as_array().map(|m| m.iter().collect()).unwrap_or_default();
    mounts.sort_by_key(|m| m["mountPath"].as_str().map_or(0, str::len));
    let volumes = spec["volumes"].as_array().context("the pod's volumes")?;
    let mut writable = Vec::new();
    for mount in mounts {
        let path = mount["mountPath"].as_str().context("a mountPath")?;
        ensure!(mount["subPath"].is_null(), "{path}: subPath is not laid out by this test");
        let name = &mount["name"];
        let volume = volumes.iter().find(|v| &v["name"] == name).with_context(|| format!("no volume {name}"))?;
        let dir = under(root, path);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("emptying {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)?;
        volume_files(docs, volume, path, &dir, secret)?;
        let scratch = volume.get("emptyDir").is_some() || volume.get("persistentVolumeClaim").is_some();
        if scratch && mount["readOnly"] != true {
            writable.push(dir);
        }
    }
    let read_only_root = container["securityContext"]["readOnlyRootFilesystem"] == true;
    let mut laid_out = Vec::new();
    files_under(root, &mut laid_out)?;

    let mut env = image.env.clone();
    for var in container["env"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let name = var["name"].as_str().context("an env name")?.to_owned();
        let value = if let Some(value) = var["value"].as_str() {
            ensure!(!value.contains("$("), "{name}: $(VAR) references are not expanded by this test");
            value.to_owned()
        } else if let Some(r) = var["valueFrom"].get("secretKeyRef") {
            let (secret_name, key) = (r["name"].as_str().unwrap_or(""), r["key"].as_str().unwrap_or(""));
            match named(docs, "Secret", secret_name).map(|s| key_of(s, key)).transpose()?.flatten() {
                Some(value) => value,
                None => secret(secret_name, key, &Consumer::Env(name.clone()))?,
            }
        } else if let Some(r) = var["valueFrom"].get("configMapKeyRef") {
            let (map, key) = (r["name"].as_str().unwrap_or(""), r["key"].as_str().unwrap_or(""));
            let map = named(docs, "ConfigMap", map).with_context(|| format!("{name}: no ConfigMap {map}"))?;
            key_of(map, key)?.with_context(|| format!("{name}: the ConfigMap has no key {key}"))?
        } else if var["valueFrom"].is_null() {
            String::new()
        } else {
            bail!("{name}: a valueFrom this test does not lay out: {}", var["valueFrom"]);
        };
        env.retain(|(k, _)| k != &name);
        env.push((name, value));
    }
    for (name, value) in &mut env {
        *value = reroot(root, name, value)?;
    }

    let command: Vec<String> = serde_json::from_value(container["command"].clone()).unwrap_or_default();
    let args: Option<Vec<String>> = serde_json::from_value(container["args"].clone()).ok();
    // Kubernetes: `command` replaces the ENTRYPOINT (and drops the CMD), `args` the CMD.
    let mut argv = if command.is_empty() { image.entrypoint.clone() } else { command.clone() };
    argv.extend(match args {
        Some(args) => args,
        None if command.is_empty() => image.cmd.clone(),
        None => Vec::new(),
    });
    ensure!(!argv.is_empty(), "the container runs nothing");
    let program = argv.remove(0);
    ensure!(image.built.contains(&program), "{program} is not the binary the image builds ({:?})", image.built);
    let workdir = under(root, container["workingDir"].as_str().unwrap_or(&image.workdir));
    let writable = read_only_root.then_some(writable);
    Ok(Pod { root: root.to_owned(), program, args: argv, env, workdir, writable, laid_out })
}

/// Writes the files of a ConfigMap, Secret, emptyDir or claim volume into `dir`.
fn volume_files(
    docs: &[Value],
    volume: &Value,
    path: &str,
    dir: &Path,
    secret: &mut dyn FnMut(&str, &str, &Consumer) -> anyhow::Result<String>,
) -> anyhow::Result<()> {
    if volume.get("emptyDir").is_some() || volume.get("persistentVolumeClaim").is_some() {
        return Ok(()); // empty at the pod's first start
    }
    let (source, object_name, kind) = if let Some(c) = volume.get("configMap") {
        (c, c["name"].as_str().unwrap_or(""), "ConfigMap")
    } else if let Some(s) = volume.get("secret") {
        (s, s["secretName"].as_str().unwrap_or(""), "Secret")
    } else {
        bail!("{path}: a volume this test does not lay out: {volume}");
    };
    let rendered = named(docs, kind, object_name);
    ensure!(kind == "Secret" || rendered.is_some(), "{path}: no ConfigMap {object_name} was rendered");
    let items: Vec<(String, String)> = match source["items"].as_array() {
        Some(items) => items
            .iter()
            .map(|i| (i["key"].as_str().unwrap_or("").to_owned(), i["path"].as_str().unwrap_or("").to_owned()))
            .collect(),
        None => {
            let object = rendered.with_context(|| format!("{path}: Secret {object_name} without items"))?;
            let keys = object["data"].as_object().into_iter().chain(object["stringData"].as_object());
            keys.flat_map(|m| m.keys()).map(|k| (k.clone(), k.clone())).collect()
        }
    };
    for (key, file) in items {
        let content = match rendered.map(|o| key_of(o, &key)).transpose()?.flatten() {
            Some(content) => content,
            // Kubernetes refuses to start a pod whose volume names a key that is not there.
            None if kind == "ConfigMap" => bail!("{path}: ConfigMap {object_name} has no key {key}"),
            None => secret(object_name, &key, &Consumer::File(format!("{}/{file}", path.trim_end_matches('/'))))?,
        };
        let target = dir.join(&file);
        std::fs::create_dir_all(target.parent().context("a file's folder")?)?;
        std::fs::write(&target, content).with_context(|| format!("writing {}", target.display()))?;
        if let Some(mode) = source["defaultMode"].as_u64() {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = u32::try_from(mode).context("defaultMode")?;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}

/// A variable naming an absolute path of the pod (or a `sqlite://` URL of one) names the same
/// path under `root`; it must be one the image or a volume provides.
fn reroot(root: &Path, name: &str, value: &str) -> anyhow::Result<String> {
    let (prefix, path) = match value.strip_prefix("sqlite://") {
        Some(path) => ("sqlite://", path),
        None => ("", value),
    };
    if !path.starts_with('/') {
        return Ok(value.to_owned());
    }
    let path = path.split('?').next().unwrap_or(path);
    let local = under(root, path);
    let provided = if prefix.is_empty() { local.exists() } else { local.parent().is_some_and(Path::is_dir) };
    ensure!(provided, "{name}={value}: nothing in the pod (image or volume) provides {path}");
    Ok(value.replacen(path, &local.display().to_string(), 1))
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    if from.is_file() {
        std::fs::create_dir_all(to.parent().context("a file's folder")?)?;
        std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
        return Ok(());
    }
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        copy_tree(&entry.path(), &to.join(entry.file_name()))?;
    }
    Ok(())
}

/// The variables of `pod` as a map, for assertions.
pub fn env_map(pod: &Pod) -> BTreeMap<&str, &str> {
    pod.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}
