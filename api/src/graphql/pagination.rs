//! Relay connections over keyset pagination by id. Ids are ULID-based, so ordering by id is
//! ordering by creation time, stable under inserts; cursors are opaque to clients.

use async_graphql::{
    Context, OutputType, SimpleObject,
    connection::{Connection, Edge, EmptyFields},
};
use governance_core::CoreError;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect, Select};

use super::{error::GqlResultExt, state};

/// Fields every connection has besides edges and pageInfo.
#[derive(SimpleObject, Default)]
pub struct Page {
    /// How many items match, across all pages.
    pub total_count: u64,
}

/// The direction of a list.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

const CURSOR_PREFIX: &str = "c1:";

/// The cursor of an item.
pub fn encode_cursor(id: &str) -> String {
    hex::encode(format!("{CURSOR_PREFIX}{id}"))
}

/// The id behind a cursor, or `BAD_USER_INPUT`.
pub fn decode_cursor(cursor: &str) -> Result<String, CoreError> {
    let invalid = || {
        CoreError::bad_field(
            "after",
            format!("`{cursor}` is not a cursor of this list: pass a cursor from a previous page"),
        )
    };
    let bytes = hex::decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    text.strip_prefix(CURSOR_PREFIX)
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .ok_or_else(invalid)
}

/// One page of `query` (already filtered and ordered by `id_column` in `order`).
#[allow(clippy::too_many_arguments)]
pub async fn by_id<E, N>(
    ctx: &Context<'_>,
    query: Select<E>,
    id_column: E::Column,
    order: Order,
    first: Option<i32>,
    after: Option<String>,
    id_of: impl Fn(&E::Model) -> String,
    wrap: impl Fn(E::Model) -> N,
) -> async_graphql::Result<Connection<String, N, Page, EmptyFields>>
where
    E: EntityTrait,
    E::Model: Sync,
    N: OutputType,
{
    let state = state(ctx);
    let max = state.config.limits.max_page_size;
    let limit = match first {
        None => max.min(50),
        Some(n) if n < 0 => {
            return Err(CoreError::bad_field("first", "`first` must be 0 or more")).gql();
        }
        Some(n) => (n as usize).min(max),
    };
    let total_count = query
        .clone()
        .count(&state.db)
        .await
        .map_err(CoreError::from)
        .gql()?;
    let mut page_query = query;
    if let Some(cursor) = &after {
        let id = decode_cursor(cursor).gql()?;
        page_query = match order {
            Order::Asc => page_query.filter(id_column.gt(id)),
            Order::Desc => page_query.filter(id_column.lt(id)),
        };
    }
    let mut rows = page_query
        .limit(limit as u64 + 1)
        .all(&state.db)
        .await
        .map_err(CoreError::from)
        .gql()?;
    let has_next = rows.len() > limit;
    rows.truncate(limit);
    let mut connection =
        Connection::with_additional_fields(after.is_some(), has_next, Page { total_count });
    connection.edges.extend(
        rows.into_iter()
            .map(|row| Edge::new(encode_cursor(&id_of(&row)), wrap(row))),
    );
    Ok(connection)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = encode_cursor("run_01abc");
        assert_eq!(decode_cursor(&c).unwrap(), "run_01abc");
        assert!(decode_cursor("zz").is_err());
        assert!(decode_cursor(&hex::encode("nope")).is_err());
        assert_eq!(decode_cursor("zz").unwrap_err().code(), "BAD_USER_INPUT");
    }
}
