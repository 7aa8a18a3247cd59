//! The environment's database under the policy: engine and version from what the platform
//! offers, storage as the policy says, credentials generated per environment, and the seed.

use super::{ContainerResources, DatabaseSpec, Problems, SeedSpec, ServiceSpec, SqlFile, list_or_none};
use crate::policy::{EffectivePolicy, ResourceValues, Storage};
use crate::repo_config::DatabaseConfig;

/// The generated secret holding the database's password (`generated-database-password`).
pub const PASSWORD_SECRET: &str = "database-password";
/// The database's user and database name.
pub const DATABASE_USER: &str = "preview";

/// The most SQL files a seed may list.
pub const MAX_SEED_SQL_FILES: usize = 20;
/// The most bytes of SQL a seed may run, all files together: they travel in one ConfigMap, and
/// the API server stores at most 1 MiB per object.
pub const MAX_SEED_SQL_BYTES: usize = 512 * 1024;
/// Where the seed's SQL files are mounted in its container.
pub const SEED_SQL_DIR: &str = "/seed";

/// The database, or its problems pushed. `services` are the resolved services (the seed runs in
/// one of them).
pub(super) fn resolve_database(
    policy: &EffectivePolicy,
    config: &DatabaseConfig,
    services: &[ServiceSpec],
    p: &mut Problems,
) -> Option<DatabaseSpec> {
    let engine = config.engine.name();
    let Some(offered) = policy.database.engines.get(engine) else {
        let engines: Vec<String> = policy.database.engines.keys().cloned().collect();
        p.push(
            "database.engine",
            format!("{engine} is not offered by the platform; offered: {}", list_or_none(&engines)),
        );
        return None;
    };
    let version = config.version.clone().unwrap_or_else(|| offered.default_version.clone());
    let Some(image) = offered.versions.get(&version) else {
        p.push(
            "database.version",
            format!(
                "{engine} {version} is not offered by the platform; offered: {}",
                crate::policy::keys(&offered.versions)
            ),
        );
        return None;
    };
    let limits = &policy.container;
    let resources = ContainerResources {
        requests: ResourceValues {
            cpu: limits.default_request.cpu.clone(),
            memory: limits.default_request.memory.clone(),
        },
        limits: ResourceValues { cpu: limits.default_limit.cpu.clone(), memory: limits.default_limit.memory.clone() },
    };
    let seed = config.seed.as_ref().and_then(|seed| {
        match (seed.command.is_empty(), seed.sql.is_empty()) {
            (true, true) => {
                p.push(
                    "database.seed",
                    "needs `command` (run in a service's image) or `sql` (files of the repository)",
                );
                return None;
            }
            (false, false) => {
                p.push("database.seed", "has both `command` and `sql`; use one");
                return None;
            }
            _ => {}
        }
        if !seed.sql.is_empty() {
            let sql = sql_files(&seed.sql, p)?;
            if seed.service.is_some() {
                p.push(
                    "database.seed.service",
                    "is for a `command`; SQL files run in the database's image, with `psql`",
                );
                return None;
            }
            return Some(SeedSpec {
                job: String::new(),
                service: None,
                image: image.clone(),
                command: psql_command(&sql),
                env: Default::default(),
                platform_secrets: Vec::new(),
                generated_secrets: Vec::new(),
                resources: resources.clone(),
                timeout_seconds: policy.database.seed_timeout.as_secs(),
                sql,
                config_map: None,
            });
        }
        let service = match &seed.service {
            Some(name) => match services.iter().find(|s| &s.name == name) {
                Some(service) => service,
                None => {
                    let names: Vec<String> = services.iter().map(|s| s.name.clone()).collect();
                    p.push(
                        "database.seed.service",
                        format!("{name:?} is not one of the services: {}", names.join(", ")),
                    );
                    return None;
                }
            },
            None => services.first()?,
        };
        Some(SeedSpec {
            job: String::new(),
            service: Some(service.name.clone()),
            image: service.image.clone(),
            command: seed.command.clone(),
            env: service.env.clone(),
            platform_secrets: service.platform_secrets.clone(),
            generated_secrets: service.generated_secrets.clone(),
            resources: service.resources.clone(),
            timeout_seconds: policy.database.seed_timeout.as_secs(),
            sql: Vec::new(),
            config_map: None,
        })
    });
    Some(DatabaseSpec {
        engine: engine.to_owned(),
        version,
        image: image.clone(),
        generation: 1,
        statefulset: String::new(),
        storage: policy.database.storage,
        volume: policy.database.storage == Storage::Volume,
        storage_class: policy.database.storage_class.clone(),
        size: policy.database.size.clone(),
        user: DATABASE_USER.to_owned(),
        password_secret: format!("generated-{PASSWORD_SECRET}"),
        resources,
        seed,
    })
}

/// `paths` as the seed's files, each with its key in the ConfigMap (`01-schema.sql`: the order
/// kept in the name, the rest of the path made a valid key), or the problems pushed. Paths are
/// relative to the repository's root and name `.sql` files; nothing leaves the repository.
fn sql_files(paths: &[String], p: &mut Problems) -> Option<Vec<SqlFile>> {
    if paths.len() > MAX_SEED_SQL_FILES {
        p.push("database.seed.sql", format!("lists {} files; at most {MAX_SEED_SQL_FILES} are run", paths.len()));
        return None;
    }
    let mut files = Vec::with_capacity(paths.len());
    for (i, path) in paths.iter().enumerate() {
        let field = format!("database.seed.sql[{i}]");
        if let Err(problem) = check_sql_path(path) {
            p.push(field, format!("{path:?} {problem}"));
            return None;
        }
        if files.iter().any(|f: &SqlFile| f.path == *path) {
            p.push(field, format!("{path:?} is listed twice"));
            return None;
        }
        let name: String = path
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' })
            .collect();
        files.push(SqlFile { path: path.clone(), key: format!("{:02}-{name}", i + 1) });
    }
    Some(files)
}

fn check_sql_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() || path.len() > 200 {
        return Err("must be a path of 1 to 200 characters");
    }
    if path.starts_with('/') || path.contains('\\') {
        return Err("must be relative to the repository's root, with `/` between folders");
    }
    if path.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
        return Err("must not have empty, `.` or `..` parts");
    }
    if path.chars().any(char::is_control) {
        return Err("must not hold control characters");
    }
    if !path.ends_with(".sql") {
        return Err("must name a `.sql` file");
    }
    Ok(())
}

/// `psql` running each file in order, all in one transaction that stops at the first error: a
/// failed seed leaves an empty database, not half of one. The connection comes from the `PG*`
/// variables every container of an environment with a database gets.
fn psql_command(files: &[SqlFile]) -> Vec<String> {
    let mut command: Vec<String> =
        ["psql", "--no-psqlrc", "--set", "ON_ERROR_STOP=1", "--single-transaction"].map(str::to_owned).into();
    for file in files {
        command.push("--file".to_owned());
        command.push(format!("{SEED_SQL_DIR}/{}", file.key));
    }
    command
}
