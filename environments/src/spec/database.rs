//! The environment's database under the policy: engine and version from what the platform
//! offers, storage as the policy says, credentials generated per environment, and the seed.

use super::{ContainerResources, DatabaseSpec, Problems, SeedSpec, ServiceSpec, list_or_none};
use crate::policy::{EffectivePolicy, ResourceValues, Storage};
use crate::repo_config::DatabaseConfig;

/// The generated secret holding the database's password (`generated-database-password`).
pub const PASSWORD_SECRET: &str = "database-password";
/// The database's user and database name.
pub const DATABASE_USER: &str = "preview";

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
            p.push(
                "database.seed.sql",
                "SQL files are not read yet; seed with a `command` run in a service's image (it gets DATABASE_URL)",
            );
            return None;
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
            service: service.name.clone(),
            image: service.image.clone(),
            command: seed.command.clone(),
            env: service.env.clone(),
            platform_secrets: service.platform_secrets.clone(),
            generated_secrets: service.generated_secrets.clone(),
            resources: service.resources.clone(),
            timeout_seconds: policy.database.seed_timeout.as_secs(),
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
