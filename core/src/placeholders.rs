//! Bind placeholders for SQL the core writes by hand: `$1, $2, …` on PostgreSQL, `?` on SQLite.
//! (sea-query's custom expressions number theirs from 1 within the expression, so the same
//! numbering serves a whole statement and a `cust_with_values` fragment alike.)

use std::fmt::Write;

use sea_orm::DbBackend;

/// The placeholder of the `n`-th value (from 1).
pub(crate) fn placeholder(backend: DbBackend, n: usize) -> String {
    let mut sql = String::new();
    push_placeholder(&mut sql, backend, n);
    sql
}

fn push_placeholder(sql: &mut String, backend: DbBackend, n: usize) {
    match backend {
        DbBackend::Postgres => {
            let _ = write!(sql, "${n}");
        }
        _ => sql.push('?'),
    }
}

/// The rows of a `VALUES` list: `rows` tuples of `columns` placeholders each, numbered from the
/// `first` value on, row by row: `($1, $2), ($3, $4)` or `(?, ?), (?, ?)`.
pub(crate) fn values_rows(backend: DbBackend, first: usize, rows: usize, columns: usize) -> String {
    // One string, written in place: the step lane's totals update builds one per batch.
    let mut sql = String::with_capacity(rows * columns * 6);
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            push_placeholder(&mut sql, backend, first + row * columns + column);
        }
        sql.push(')');
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_numbered_row_by_row_from_the_first_value() {
        assert_eq!(
            values_rows(DbBackend::Postgres, 2, 2, 3),
            "($2, $3, $4), ($5, $6, $7)"
        );
        assert_eq!(values_rows(DbBackend::Sqlite, 2, 2, 1), "(?), (?)");
        assert_eq!(placeholder(DbBackend::Postgres, 1), "$1");
        assert_eq!(placeholder(DbBackend::Sqlite, 9), "?");
    }
}
