//! Rendering an environment's Kubernetes objects from the minijinja templates in `templates/`.
//!
//! A template set is a folder `templates/environments/<set>/`; its files are rendered in name
//! order, each may hold several YAML documents. The renderer does not trust the templates: it
//! parses every document, accepts only the kinds previewd manages ([`Kind`]), refuses
//! cluster-scoped objects other than the environment's own Namespace, and forces the
//! environment's namespace and ownership labels onto every object, so that a template mistake
//! cannot reach outside the environment or escape pruning. The Namespace also gets the Pod
//! Security labels of [`POD_SECURITY_LABELS`], so a template cannot drop or weaken them (the
//! admission policies refuse such a namespace anyway; forcing them here keeps a template
//! mistake from becoming a failed environment).

use crate::kinds::Kind;
use crate::yaml::{self, Origin};
use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Label every object previewd creates carries; with [`ENVIRONMENT_LABEL`] it finds what to
/// prune and which namespaces are its own.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "previewd";
pub const ENVIRONMENT_LABEL: &str = "previewd.dev/environment";
pub const REPO_ID_LABEL: &str = "previewd.dev/repo-id";
pub const PR_LABEL: &str = "previewd.dev/pull-request";
/// Which previewd installation owns an object, so that two installations sharing a cluster
/// never take each other's namespaces for orphans.
pub const INSTANCE_LABEL: &str = "previewd.dev/instance";

/// Pod Security Admission labels forced onto every environment's Namespace: `restricted`
/// enforced at the latest version (a pinned older version checks less), and the same level
/// for warnings (shown to previewd when it applies a Deployment) and audit annotations.
/// The admission policies require `enforce=restricted` and no pinned version from previewd's
/// identity, so the namespace cannot be made privileged even by a leaked token.
pub const POD_SECURITY_LABELS: [(&str, &str); 6] = [
    ("pod-security.kubernetes.io/enforce", "restricted"),
    ("pod-security.kubernetes.io/enforce-version", "latest"),
    ("pod-security.kubernetes.io/warn", "restricted"),
    ("pod-security.kubernetes.io/warn-version", "latest"),
    ("pod-security.kubernetes.io/audit", "restricted"),
    ("pod-security.kubernetes.io/audit-version", "latest"),
];

/// A rendering failure, with the template and line where the platform team can fix it.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot read templates from {path}: {source}")]
    Load { path: PathBuf, source: std::io::Error },
    /// A template over the size cap, or not text; the error names the file.
    #[error(transparent)]
    File(#[from] yaml::ReadError),
    #[error("template set `{name}` does not exist; available: {available}")]
    UnknownSet { name: String, available: String },
    #[error("template {template}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Template { template: String, line: Option<usize>, message: String },
    #[error("template {template}, document {document}: rendered YAML does not parse: {message}")]
    Yaml { template: String, document: usize, message: String },
    #[error("template {template}, document {document}: {problem}")]
    Object { template: String, document: usize, problem: String },
    #[error("template set `{set}` renders no Namespace: the environment needs exactly one")]
    NoNamespace { set: String },
}

/// Who an environment belongs to; becomes labels on every object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    /// The previewd installation (setting `instance`).
    pub instance: String,
    /// The environment's name: its namespace.
    pub environment: String,
    pub repo_id: i64,
    pub pr: i64,
}

impl Ownership {
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
            (INSTANCE_LABEL.to_owned(), self.instance.clone()),
            (ENVIRONMENT_LABEL.to_owned(), self.environment.clone()),
            (REPO_ID_LABEL.to_owned(), self.repo_id.to_string()),
            (PR_LABEL.to_owned(), self.pr.to_string()),
        ])
    }

    /// Selects every object of this environment.
    pub fn selector(&self) -> String {
        format!(
            "{MANAGED_BY_LABEL}={MANAGED_BY},{INSTANCE_LABEL}={},{ENVIRONMENT_LABEL}={}",
            self.instance, self.environment
        )
    }
}

/// One rendered object.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub kind: Kind,
    pub name: String,
    pub object: Value,
}

/// The loaded templates. Built once at start; rendering is cheap and pure.
pub struct Renderer {
    env: Environment<'static>,
    sets: BTreeMap<String, Vec<String>>,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer").field("sets", &self.sets).finish()
    }
}

impl Renderer {
    /// Loads every template set under `dir/environments/`. Syntax errors are reported now, with
    /// template and line, rather than at the first pull request.
    pub fn load(dir: &Path) -> Result<Renderer, RenderError> {
        let root = dir.join("environments");
        let load_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RenderError::Load { path, source }
        };
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Templates produce YAML, not HTML.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        let mut sets = BTreeMap::new();
        for set in sorted_entries(&root).map_err(load_err(&root))? {
            if !set.is_dir() {
                continue;
            }
            let set_name = file_name(&set);
            let mut files = Vec::new();
            for file in sorted_entries(&set).map_err(load_err(&set))? {
                if !file.is_file() || !matches!(file.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                    continue;
                }
                let source = yaml::read_file(&file, Origin::Platform)?;
                let name = format!("environments/{set_name}/{}", file_name(&file));
                env.add_template_owned(name.clone(), source).map_err(template_error)?;
                files.push(name);
            }
            sets.insert(set_name, files);
        }
        Ok(Renderer { env, sets })
    }

    /// Names of the template sets, for policy validation.
    pub fn sets(&self) -> impl Iterator<Item = &str> {
        self.sets.keys().map(String::as_str)
    }

    /// Renders template set `set` with `context` into objects owned by `owner`, in apply order.
    pub fn render(&self, set: &str, context: &impl Serialize, owner: &Ownership) -> Result<Vec<Manifest>, RenderError> {
        let files = self.sets.get(set).ok_or_else(|| RenderError::UnknownSet {
            name: set.to_owned(),
            available: self.sets.keys().cloned().collect::<Vec<_>>().join(", "),
        })?;
        let context = minijinja::Value::from(minijinja::value::Serde(context));
        let mut manifests = Vec::new();
        for template in files {
            let text = self.env.get_template(template).and_then(|t| t.render(&context)).map_err(template_error)?;
            // Within the platform's bounds: the text holds values from the repository's file.
            let documents = yaml::documents(&text, Origin::Platform).map_err(|(document, e)| RenderError::Yaml {
                template: template.clone(),
                document,
                message: e.message,
            })?;
            // Empty documents (e.g. after a trailing `---`) are not counted.
            for (index, value) in documents.into_iter().enumerate() {
                let document_number = index + 1;
                let manifest = own(value, owner).map_err(|problem| RenderError::Object {
                    template: template.clone(),
                    document: document_number,
                    problem,
                })?;
                manifests.push(manifest);
            }
        }
        if !manifests.iter().any(|m| m.kind == Kind::Namespace) {
            return Err(RenderError::NoNamespace { set: set.to_owned() });
        }
        let mut seen = std::collections::BTreeSet::new();
        for m in &manifests {
            if !seen.insert((m.kind, m.name.clone())) {
                return Err(RenderError::Object {
                    template: set.to_owned(),
                    document: 0,
                    problem: format!("{} `{}` is rendered twice", m.kind, m.name),
                });
            }
        }
        manifests.sort_by_key(|m| m.kind);
        Ok(manifests)
    }
}

/// Checks one rendered object and stamps the environment's namespace and labels on it.
fn own(mut value: Value, owner: &Ownership) -> Result<Manifest, String> {
    let object = value.as_object_mut().ok_or("a document must be a mapping (a Kubernetes object)")?;
    let api_version = object.get("apiVersion").and_then(Value::as_str).ok_or("missing `apiVersion`")?.to_owned();
    let kind_name = object.get("kind").and_then(Value::as_str).ok_or("missing `kind`")?.to_owned();
    let kind = Kind::from_type(&api_version, &kind_name).ok_or_else(|| {
        let allowed: Vec<String> = Kind::ALL.iter().map(|k| format!("{}/{}", k.api_version(), k.name())).collect();
        format!("{api_version}/{kind_name} is not a kind previewd manages (allowed: {})", allowed.join(", "))
    })?;
    let metadata = object.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    let metadata = metadata.as_object_mut().ok_or("`metadata` must be a mapping")?;
    let name = if kind == Kind::Namespace {
        match metadata.get("name").and_then(Value::as_str) {
            Some(name) if name != owner.environment => {
                return Err(format!(
                    "Namespace `{name}` is not the environment's namespace `{}`: templates may not create other cluster-scoped objects",
                    owner.environment
                ));
            }
            _ => owner.environment.clone(),
        }
    } else {
        metadata.get("name").and_then(Value::as_str).ok_or("missing `metadata.name`")?.to_owned()
    };
    metadata.insert("name".into(), Value::String(name.clone()));
    if kind.is_namespaced() {
        metadata.insert("namespace".into(), Value::String(owner.environment.clone()));
    } else {
        metadata.remove("namespace");
    }
    let labels = metadata.entry("labels").or_insert_with(|| Value::Object(Map::new()));
    let labels = labels.as_object_mut().ok_or("`metadata.labels` must be a mapping")?;
    for (key, value) in owner.labels() {
        labels.insert(key, Value::String(value));
    }
    if kind == Kind::Namespace {
        for (key, value) in POD_SECURITY_LABELS {
            labels.insert(key.to_owned(), Value::String(value.to_owned()));
        }
    }
    Ok(Manifest { kind, name, object: value })
}

fn template_error(error: minijinja::Error) -> RenderError {
    let mut message = error.detail().map(str::to_owned).unwrap_or_else(|| error.kind().to_string());
    if let Some(source) = std::error::Error::source(&error) {
        message.push_str(&format!(": {source}"));
    }
    RenderError::Template { template: error.name().unwrap_or("?").to_owned(), line: error.line(), message }
}

fn sorted_entries(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    entries.sort();
    Ok(entries)
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}
