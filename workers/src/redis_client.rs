//! How the service opens Redis.

use redis::{IntoConnectionInfo, RedisResult, io::tcp::TcpSettings};

/// A client for `url` whose TCP connections send at once (`TCP_NODELAY`). With Nagle's
/// algorithm on (redis-rs's default), a command written while an earlier one is still
/// unacknowledged waits for that acknowledgement: a multiplexed connection, which writes the
/// commands of many tasks back to back, would add a round trip, or a 40 ms delayed ACK, to them.
pub fn client(url: &str) -> RedisResult<redis::Client> {
    let info = url
        .into_connection_info()?
        .set_tcp_settings(TcpSettings::default().set_nodelay(true));
    redis::Client::open(info)
}

#[cfg(test)]
mod tests {
    #[test]
    fn connections_are_opened_without_nagle() {
        let client = super::client("redis://127.0.0.1:6379/0").expect("a valid URL");
        assert!(client.get_connection_info().tcp_settings().nodelay());
        assert!(super::client("not a url").is_err());
    }
}
