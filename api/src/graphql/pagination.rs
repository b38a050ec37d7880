//! Relay connections. Every list of the API is a connection with `first`/`after` (forwards) or
//! `last`/`before` (backwards), `edges`, `pageInfo` and `totalCount`.
//!
//! Two strategies share one set of rules:
//! - [`keyset`]: a page straight from SQL, ordered by one unique key column (ids are ULID-based,
//!   so ordering by id is ordering by creation; step indexes and version numbers are unique per
//!   parent). Stable under inserts: a cursor names a key, not an offset.
//! - [`in_memory`]: a page of a list already loaded in full by a DataLoader (the small per-object
//!   lists: a run's violations, enforcements and exports), so a page of parents costs one
//!   statement per link however many parents there are.
//!
//! Cursors are opaque (hex of a versioned key); one that this API did not issue, or that belongs
//! to another list, is refused with `BAD_USER_INPUT`. A page holds at most `limits.maxPageSize`
//! items; asking for more is refused rather than silently cut.

use async_graphql::{
    Context, OutputType, SimpleObject,
    connection::{Connection, Edge, EmptyFields},
};
use governance_core::CoreError;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, Order as SqlOrder, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait, Select,
    sea_query::{Alias, Expr},
};

use super::{error::GqlResultExt, state};

/// Fields every connection has besides `edges` and `pageInfo`.
#[derive(SimpleObject, Default)]
pub struct Page {
    /// How many items match, across all pages.
    pub total_count: u64,
}

/// A connection of `N`, as every list of the API returns it.
pub type Conn<N> = Connection<String, N, Page, EmptyFields>;

/// The direction of a list.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Order {
    Asc,
    Desc,
}

impl Order {
    fn reversed(self) -> Self {
        match self {
            Order::Asc => Order::Desc,
            Order::Desc => Order::Asc,
        }
    }

    fn sql(self) -> SqlOrder {
        match self {
            Order::Asc => SqlOrder::Asc,
            Order::Desc => SqlOrder::Desc,
        }
    }
}

/// How a key column's values travel in cursors.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum KeyKind {
    Text,
    Int,
}

/// The pagination arguments of a connection field.
#[derive(Default, Clone, Debug)]
pub struct PageArgs {
    pub first: Option<i32>,
    pub after: Option<String>,
    pub last: Option<i32>,
    pub before: Option<String>,
}

impl PageArgs {
    pub fn new(
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> Self {
        Self {
            first,
            after,
            last,
            before,
        }
    }
}

const CURSOR_PREFIX: &str = "c1:";
const DEFAULT_PAGE_SIZE: usize = 50;

/// The cost of a connection field for the complexity limit: its children's cost once per item
/// it can return (`first` or `last`, else the default page size), plus one for the field. A
/// negative or zero count costs one page of one (it is refused when the field runs).
pub fn page_cost(first: Option<i32>, last: Option<i32>, child_complexity: usize) -> usize {
    let size = first
        .or(last)
        .map(|n| usize::try_from(n).unwrap_or(1).max(1))
        .unwrap_or(DEFAULT_PAGE_SIZE);
    size.saturating_mul(child_complexity).saturating_add(1)
}

/// The cursor of an item.
pub fn encode_cursor(key: &str) -> String {
    hex::encode(format!("{CURSOR_PREFIX}{key}"))
}

/// The key behind a cursor, or `BAD_USER_INPUT` naming the argument.
pub fn decode_cursor(argument: &str, cursor: &str) -> Result<String, CoreError> {
    let invalid = || {
        CoreError::bad_field(
            argument,
            format!("`{cursor}` is not a cursor of this list: pass a cursor from a previous page"),
        )
    };
    let bytes = hex::decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    text.strip_prefix(CURSOR_PREFIX)
        .filter(|key| !key.is_empty())
        .map(str::to_string)
        .ok_or_else(invalid)
}

/// What a request asks for, checked.
#[derive(Debug, PartialEq, Eq)]
struct Window {
    /// How many items at most.
    limit: usize,
    /// Counting from the end (`last`) rather than the start (`first`).
    from_end: bool,
    after: Option<String>,
    before: Option<String>,
}

fn count_arg(name: &str, value: Option<i32>, max: usize) -> Result<Option<usize>, CoreError> {
    match value {
        None => Ok(None),
        Some(n) if n < 0 => Err(CoreError::bad_field(
            name,
            format!("`{name}` must be 0 or more"),
        )),
        Some(n) if n as usize > max => Err(CoreError::bad_field(
            name,
            format!(
                "`{name}` is {n}, more than the largest page ({max}): ask for {max} or fewer and follow the cursors"
            ),
        )),
        Some(n) => Ok(Some(n as usize)),
    }
}

impl Window {
    fn of(args: &PageArgs, max: usize) -> Result<Self, CoreError> {
        let first = count_arg("first", args.first, max)?;
        let last = count_arg("last", args.last, max)?;
        if first.is_some() && last.is_some() {
            return Err(CoreError::bad_field(
                "last",
                "pass `first` (with `after`) to page forwards or `last` (with `before`) to page backwards, not both",
            ));
        }
        let after = args
            .after
            .as_deref()
            .map(|c| decode_cursor("after", c))
            .transpose()?;
        let before = args
            .before
            .as_deref()
            .map(|c| decode_cursor("before", c))
            .transpose()?;
        Ok(match last {
            Some(limit) => Window {
                limit,
                from_end: true,
                after,
                before,
            },
            None => Window {
                limit: first.unwrap_or(DEFAULT_PAGE_SIZE.min(max)),
                from_end: false,
                after,
                before,
            },
        })
    }

    /// `(hasPreviousPage, hasNextPage)` given whether more items lay beyond the limit.
    fn page_info(&self, more: bool) -> (bool, bool) {
        if self.from_end {
            (more, self.before.is_some())
        } else {
            (self.after.is_some(), more)
        }
    }
}

fn key_value(kind: KeyKind, argument: &str, key: &str) -> Result<sea_orm::Value, CoreError> {
    match kind {
        KeyKind::Text => Ok(key.to_string().into()),
        KeyKind::Int => int_key(argument, key).map(Into::into),
    }
}

/// The integer behind an integer-keyed cursor.
fn int_key(argument: &str, key: &str) -> Result<i64, CoreError> {
    key.parse::<i64>()
        .map_err(|_| CoreError::bad_field(argument, "the cursor is not a cursor of this list"))
}

fn max_page_size(ctx: &Context<'_>) -> usize {
    state(ctx).config.limits.max_page_size
}

/// The column that carries `totalCount` beside each row of a keyset page.
const TOTAL_COLUMN: &str = "governance_total_count";

/// One page of `query` (filtered, not ordered) by the unique key column `key` in `order`.
#[allow(clippy::too_many_arguments)]
pub async fn keyset<E, N>(
    ctx: &Context<'_>,
    query: Select<E>,
    key: E::Column,
    kind: KeyKind,
    order: Order,
    args: PageArgs,
    key_of: impl Fn(&E::Model) -> String,
    wrap: impl Fn(E::Model) -> N,
) -> async_graphql::Result<Conn<N>>
where
    E: EntityTrait,
    E::Model: Sync,
    N: OutputType,
{
    let mut window = Window::of(&args, max_page_size(ctx)).gql()?;
    // A keyset cursor names its table as well as its key, so a cursor of another list (whose
    // key would compare fine against this one's) is refused rather than read as a position.
    let list = E::default().table_name().to_string();
    for (argument, cursor) in [("after", &mut window.after), ("before", &mut window.before)] {
        if let Some(named) = cursor.take() {
            let key = named
                .strip_prefix(list.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
                .filter(|key| !key.is_empty())
                .ok_or_else(|| {
                    CoreError::bad_field(
                        argument,
                        "the cursor is not a cursor of this list: pass a cursor from a previous page of it",
                    )
                })
                .gql()?;
            *cursor = Some(key.to_string());
        }
    }
    let key_of = |model: &E::Model| format!("{list}/{}", key_of(model));
    let db = &state(ctx).db;
    // `totalCount` rides along with the page as a scalar subquery: one statement, not two.
    let mut count = query.clone().select_only().into_query();
    count.expr(Expr::cust("COUNT(*)"));
    let mut page = query.clone();
    // `after` and `before` bound the list in its own order; both may be given.
    let (after_op, before_op) = match order {
        Order::Asc => (true, false),
        Order::Desc => (false, true),
    };
    if let Some(after) = &window.after {
        let value = key_value(kind, "after", after).gql()?;
        page = page.filter(if after_op {
            key.gt(value)
        } else {
            key.lt(value)
        });
    }
    if let Some(before) = &window.before {
        let value = key_value(kind, "before", before).gql()?;
        page = page.filter(if before_op {
            key.gt(value)
        } else {
            key.lt(value)
        });
    }
    let scan = if window.from_end {
        order.reversed()
    } else {
        order
    };
    let mut statement = page
        .order_by(key, scan.sql())
        .limit(window.limit as u64 + 1)
        .into_query();
    statement.expr_as(
        Expr::SubQuery(None, Box::new(count.into())),
        Alias::new(TOTAL_COLUMN),
    );
    let results = db
        .query_all(&statement)
        .await
        .map_err(CoreError::from)
        .gql()?;
    let total_count = match results.first() {
        Some(first) => first
            .try_get::<i64>("", TOTAL_COLUMN)
            .map_err(CoreError::from)
            .gql()?
            .max(0) as u64,
        // An empty page without cursors saw the whole list empty: counting again in another
        // statement could see a row written since, and contradict the page.
        None if window.after.is_none() && window.before.is_none() => 0,
        // No row carries the count (an empty page past a cursor): count on its own.
        None => query.count(db).await.map_err(CoreError::from).gql()?,
    };
    let mut rows = results
        .iter()
        .map(|row| E::Model::from_query_result(row, ""))
        .collect::<Result<Vec<_>, _>>()
        .map_err(CoreError::from)
        .gql()?;
    let more = rows.len() > window.limit;
    rows.truncate(window.limit);
    if window.from_end {
        rows.reverse();
    }
    Ok(connection(&window, more, total_count, rows, key_of, wrap))
}

/// A page of a dense list, whose keys are exactly `0..total` (a run's steps): the page is an
/// index range known before anything is read, so its rows can be loaded in one batch with the
/// pages of sibling lists, and the total needs no count.
pub struct DenseWindow {
    window: Window,
    /// First index of the page.
    pub start: i64,
    /// One past the last index of the page.
    pub end: i64,
    more: bool,
}

/// The index range that `args` ask for out of `0..total`.
pub fn dense_window(
    ctx: &Context<'_>,
    total: i64,
    args: &PageArgs,
) -> async_graphql::Result<DenseWindow> {
    let window = Window::of(args, max_page_size(ctx)).gql()?;
    let index = |argument: &str, key: &Option<String>| {
        key.as_deref()
            .map(|k| int_key(argument, k))
            .transpose()
            .gql()
    };
    let low = index("after", &window.after)?.map_or(0, |a| a.saturating_add(1).max(0));
    let high = index("before", &window.before)?.map_or(total, |b| b.clamp(0, total));
    let limit = window.limit as i64;
    let (start, end, more) = if low >= high {
        (low, low, false)
    } else if window.from_end {
        let start = (high - limit).max(low);
        (start, high, start > low)
    } else {
        let end = (low + limit).min(high);
        (low, end, end < high)
    };
    Ok(DenseWindow {
        window,
        start,
        end,
        more,
    })
}

/// The connection of a dense page (`rows` are the page's items, in order).
pub fn dense_connection<T, N: OutputType>(
    page: &DenseWindow,
    total: i64,
    rows: Vec<T>,
    key_of: impl Fn(&T) -> String,
    wrap: impl Fn(T) -> N,
) -> Conn<N> {
    connection(
        &page.window,
        page.more,
        total.max(0) as u64,
        rows,
        key_of,
        wrap,
    )
}

/// One page of `items` (already in the list's order, each with a unique key).
pub fn in_memory<T, N>(
    ctx: &Context<'_>,
    items: Vec<T>,
    args: PageArgs,
    key_of: impl Fn(&T) -> String,
    wrap: impl Fn(T) -> N,
) -> async_graphql::Result<Conn<N>>
where
    N: OutputType,
{
    let window = Window::of(&args, max_page_size(ctx)).gql()?;
    let (rows, more, total) = slice(&window, items, &key_of).gql()?;
    Ok(connection(&window, more, total as u64, rows, key_of, wrap))
}

/// The window's part of `items`, whether more lay beyond it, and how many there are in all.
fn slice<T>(
    window: &Window,
    items: Vec<T>,
    key_of: &impl Fn(&T) -> String,
) -> Result<(Vec<T>, bool, usize), CoreError> {
    let total = items.len();
    let position = |argument: &str, key: &str| {
        items
            .iter()
            .position(|item| key_of(item) == key)
            .ok_or_else(|| {
                CoreError::bad_field(
                    argument,
                    "the cursor is not a cursor of this list: pass a cursor from a previous page",
                )
            })
    };
    let start = match &window.after {
        Some(key) => position("after", key)? + 1,
        None => 0,
    };
    let end = match &window.before {
        Some(key) => position("before", key)?,
        None => total,
    };
    let mut items = items;
    let range: Vec<T> = if start >= end {
        Vec::new()
    } else {
        items.drain(start..end).collect()
    };
    let more = range.len() > window.limit;
    let rows = if window.from_end {
        let skip = range.len().saturating_sub(window.limit);
        range.into_iter().skip(skip).collect()
    } else {
        range.into_iter().take(window.limit).collect()
    };
    Ok((rows, more, total))
}

fn connection<T, N: OutputType>(
    window: &Window,
    more: bool,
    total_count: u64,
    rows: Vec<T>,
    key_of: impl Fn(&T) -> String,
    wrap: impl Fn(T) -> N,
) -> Conn<N> {
    let (has_previous, has_next) = window.page_info(more);
    let mut connection =
        Connection::with_additional_fields(has_previous, has_next, Page { total_count });
    connection.edges.extend(rows.into_iter().map(|row| {
        let cursor = encode_cursor(&key_of(&row));
        Edge::new(cursor, wrap(row))
    }));
    connection
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_costs_its_children_once_per_item() {
        assert_eq!(page_cost(Some(10), None, 3), 31);
        assert_eq!(page_cost(None, Some(4), 5), 21);
        assert_eq!(page_cost(None, None, 2), DEFAULT_PAGE_SIZE * 2 + 1);
        assert_eq!(page_cost(Some(-5), None, 7), 8);
        assert_eq!(page_cost(Some(i32::MAX), None, usize::MAX), usize::MAX);
    }

    fn args(
        first: Option<i32>,
        after: Option<&str>,
        last: Option<i32>,
        before: Option<&str>,
    ) -> PageArgs {
        PageArgs::new(
            first,
            after.map(encode_cursor),
            last,
            before.map(encode_cursor),
        )
    }

    fn keys(window: &Window, items: &[&str]) -> (Vec<String>, bool) {
        let items: Vec<String> = items.iter().map(|s| s.to_string()).collect();
        let (rows, more, _) = slice(window, items, &|s: &String| s.clone()).unwrap();
        (rows, more)
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = encode_cursor("run_01abc");
        assert_eq!(decode_cursor("after", &c).unwrap(), "run_01abc");
        assert!(decode_cursor("after", "zz").is_err());
        assert!(decode_cursor("after", &hex::encode("nope")).is_err());
        assert_eq!(
            decode_cursor("after", "zz").unwrap_err().code(),
            "BAD_USER_INPUT"
        );
    }

    #[test]
    fn limits_are_checked() {
        assert!(Window::of(&args(Some(-1), None, None, None), 100).is_err());
        assert!(Window::of(&args(Some(101), None, None, None), 100).is_err());
        assert!(Window::of(&args(None, None, Some(101), None), 100).is_err());
        assert!(Window::of(&args(Some(1), None, Some(1), None), 100).is_err());
        assert_eq!(
            Window::of(&args(None, None, None, None), 100)
                .unwrap()
                .limit,
            50
        );
        assert_eq!(
            Window::of(&args(None, None, None, None), 20).unwrap().limit,
            20
        );
    }

    #[test]
    fn forwards_and_backwards_in_memory() {
        let all = ["a", "b", "c", "d", "e"];
        let w = Window::of(&args(Some(2), None, None, None), 100).unwrap();
        assert_eq!(keys(&w, &all), (vec!["a".into(), "b".into()], true));
        let w = Window::of(&args(Some(2), Some("d"), None, None), 100).unwrap();
        assert_eq!(keys(&w, &all), (vec!["e".into()], false));
        let w = Window::of(&args(None, None, Some(2), None), 100).unwrap();
        assert_eq!(keys(&w, &all), (vec!["d".into(), "e".into()], true));
        let w = Window::of(&args(None, None, Some(2), Some("c")), 100).unwrap();
        assert_eq!(keys(&w, &all), (vec!["a".into(), "b".into()], false));
        let w = Window::of(&args(None, Some("a"), None, Some("e")), 100).unwrap();
        assert_eq!(
            keys(&w, &all),
            (vec!["b".into(), "c".into(), "d".into()], false)
        );
        let w = Window::of(&args(Some(0), None, None, None), 100).unwrap();
        assert_eq!(keys(&w, &all), (vec![], true));
        let w = Window::of(&args(Some(3), None, None, None), 100).unwrap();
        assert_eq!(keys(&w, &[]), (vec![], false));
    }

    #[test]
    fn a_cursor_of_another_list_is_refused_in_memory() {
        let w = Window::of(&args(Some(2), Some("zz"), None, None), 100).unwrap();
        let (result, code) = {
            let r = slice(&w, vec!["a".to_string()], &|s: &String| s.clone());
            (r.is_err(), r.err().map(|e| e.code()))
        };
        assert!(result);
        assert_eq!(code, Some("BAD_USER_INPUT"));
    }

    #[test]
    fn page_info_follows_the_direction() {
        let w = Window::of(&args(Some(2), Some("a"), None, None), 100).unwrap();
        assert_eq!(w.page_info(true), (true, true));
        let w = Window::of(&args(None, None, Some(2), None), 100).unwrap();
        assert_eq!(w.page_info(false), (false, false));
    }
}
