//! The schema's versions, embedded in the binary (`crates/ferry-server/migrations/`).

use super::{Backend, StateError};
use futures_util::future::BoxFuture;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::AnyPool;
use std::borrow::Cow;

/// `(version, description, SQLite text, PostgreSQL text)`, oldest first. A released
/// migration is never edited: a change is a new version.
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[(
    1,
    "job state",
    include_str!("../../migrations/sqlite/0001_job_state.sql"),
    include_str!("../../migrations/postgres/0001_job_state.sql"),
)];

#[derive(Debug)]
struct Embedded(Backend);

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        let postgres = self.0 == Backend::Postgres;
        Box::pin(async move {
            Ok(MIGRATIONS
                .iter()
                .map(|&(version, description, sqlite, pg)| {
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(if postgres { pg } else { sqlite }),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// Applies the migrations the database lacks (under the backend's migration lock, so
/// hosts starting together do not race).
pub(super) async fn run(pool: &AnyPool, backend: Backend) -> Result<(), StateError> {
    let migrator = Migrator::new(Embedded(backend))
        .await
        .map_err(|e| StateError::Migrate(e.to_string()))?;
    migrator
        .run(pool)
        .await
        .map_err(|e| StateError::Migrate(e.to_string()))
}
