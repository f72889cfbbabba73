//! Partition leases on PostgreSQL: session advisory locks, one per
//! partition, held on a connection of their own, and a heartbeat row per
//! daemon in `daemons`, so each daemon knows how many share the partitions.
//! A lock lives as long as its connection: a daemon that dies (even by
//! SIGKILL) loses its connection and with it every lease at once. A lease
//! only keeps daemons from doing the same work; what makes a step apply
//! once is its partition's version check (store/step.rs).

use super::{Backend, Store, StoreError};
use sqlx::{Connection as _, Row};

/// A daemon counts as alive while its heartbeat is younger than this.
pub const ALIVE_MS: i64 = 3_000;

/// The advisory lock keys' namespace ("nurture" partitions): key =
/// NAMESPACE << 32 | partition.
const NAMESPACE: i64 = 0x6e75_7274;

/// The connection that holds this daemon's leases.
pub struct LeaseConn {
    conn: sqlx::AnyConnection,
}

/// The database's clock in epoch milliseconds: daemons on different
/// machines agree on it.
const DB_NOW: &str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";

impl Store {
    /// A connection of its own for leases (PostgreSQL only: SQLite has one
    /// daemon, which holds every partition).
    pub async fn lease_connection(&self) -> Result<Option<LeaseConn>, StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let conn = self.writer.acquire().await?.detach();
        Ok(Some(LeaseConn { conn }))
    }
}

impl LeaseConn {
    /// Says `daemon` is alive; returns the daemons alive, in id order
    /// (`daemon` among them).
    pub async fn heartbeat(&mut self, daemon: &str) -> Result<Vec<String>, StoreError> {
        let sql = format!(
            "INSERT INTO daemons (id, seen_at) VALUES ($1, {DB_NOW}) \
             ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at"
        );
        sqlx::query(&sql)
            .bind(daemon.to_string())
            .execute(&mut self.conn)
            .await?;
        // Rows of daemons long gone are cleared (a minute after).
        let sql = format!("DELETE FROM daemons WHERE seen_at < {DB_NOW} - 60000");
        sqlx::query(&sql).execute(&mut self.conn).await?;
        let sql = format!("SELECT id FROM daemons WHERE seen_at > {DB_NOW} - $1 ORDER BY id");
        let rows = sqlx::query(&sql)
            .bind(ALIVE_MS)
            .fetch_all(&mut self.conn)
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(StoreError::from))
            .collect()
    }

    /// Takes the lease of `part` if nobody holds it.
    pub async fn try_lock(&mut self, part: i64) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT pg_try_advisory_lock($1)")
            .bind(NAMESPACE << 32 | part)
            .fetch_one(&mut self.conn)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Gives the lease of `part` up.
    pub async fn unlock(&mut self, part: i64) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(NAMESPACE << 32 | part)
            .execute(&mut self.conn)
            .await?;
        Ok(())
    }

    /// Leaves: the heartbeat row goes and every lease with the connection,
    /// so the others take the partitions over at once.
    pub async fn leave(mut self, daemon: &str) -> Result<(), StoreError> {
        let sql = "DELETE FROM daemons WHERE id = $1";
        sqlx::query(sql)
            .bind(daemon.to_string())
            .execute(&mut self.conn)
            .await?;
        self.conn.close().await?;
        Ok(())
    }
}
