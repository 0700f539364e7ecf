//! The `instances` table: heartbeats of running instances of The Eye, counted to share an
//! application's rate limit between them (see `auth::limits`).

use std::time::Duration;

use super::{Store, StoreError};

impl Store {
    /// Records that instance `instance_id` is running (`live`) or has stopped, at the
    /// server's time, so that the instances' clocks need not agree.
    pub async fn heartbeat(&self, instance_id: &str, live: bool) -> Result<(), StoreError> {
        self.client()
            .query("INSERT INTO instances SELECT {id:String}, now64(3), {live:Bool}")
            .param("id", instance_id)
            .param("live", live)
            .execute()
            .await?;
        Ok(())
    }

    /// How many instances are live: their latest row says live and is younger than
    /// `window`. At least 1 (the caller is running).
    pub async fn live_instances(&self, window: Duration) -> Result<u32, StoreError> {
        let live = self
            .client()
            .query(
                "SELECT toUInt32(count()) FROM ( \
                    SELECT argMax(live, heartbeat_at) AS live FROM instances \
                    WHERE heartbeat_at > now64(3) - toIntervalMillisecond({window_ms:UInt64}) \
                    GROUP BY instance_id \
                 ) WHERE live",
            )
            .param("window_ms", window.as_millis() as u64)
            .fetch_one::<u32>()
            .await?;
        Ok(live.max(1))
    }
}
