//! Operation limits, checked before anything runs: aliases and root fields per document (when it
//! is parsed), then depth and cost (after validation, from the figures async-graphql computes).
//! Each refusal is `BAD_USER_INPUT` with `extensions.limit` naming the setting, and its message
//! says by how much the request exceeds it and what to change.
//!
//! Cost: every field costs 1 plus its children; a connection field costs its children once per
//! item its page can hold (see `pagination::page_cost`); a few costly fields (`verifyRun`, …)
//! declare a higher cost of their own.

use std::{collections::HashSet, sync::Arc};

use async_graphql::{
    ServerError, ServerResult, ValidationResult, Variables,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextValidation},
    parser::types::{ExecutableDocument, Selection, SelectionSet},
};

use governance_core::CoreError;

use crate::config::Limits;

/// The extension that enforces [`Limits`] on every operation, over HTTP and WebSocket alike.
pub struct OperationLimits(pub Limits);

impl ExtensionFactory for OperationLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(OperationLimitsExtension(self.0.clone()))
    }
}

struct OperationLimitsExtension(Limits);

/// A refusal by the limit named `setting`, mapped as every domain error is (`CoreError::Limit`:
/// `BAD_USER_INPUT` with `extensions.limit`). It refers to no place in the query.
pub fn refusal(setting: &'static str, message: String) -> ServerError {
    let mut error = super::error::to_gql(CoreError::limit(setting, message))
        .into_server_error(async_graphql::Pos::default());
    error.locations.clear();
    error
}

/// `found` is over the limit `setting` = `limit`: "{what}, N more than the limit of M
/// (setting){advice}".
pub fn over_limit(
    setting: &'static str,
    what: String,
    found: usize,
    limit: usize,
    advice: &str,
) -> ServerError {
    refusal(
        setting,
        format!(
            "{what}, {} more than the limit of {limit} ({setting}){advice}",
            found - limit
        ),
    )
}

#[async_trait::async_trait]
impl Extension for OperationLimitsExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        check_shape(&self.0, &document)?;
        Ok(document)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await?;
        check_size(&self.0, &result).map_err(|e| vec![e])?;
        Ok(result)
    }
}

/// Aliases in the whole document, and root fields of each operation.
fn check_shape(limits: &Limits, document: &ExecutableDocument) -> ServerResult<()> {
    let mut aliases = 0usize;
    for (_, operation) in document.operations.iter() {
        aliases += count_aliases(&operation.node.selection_set.node);
    }
    for fragment in document.fragments.values() {
        aliases += count_aliases(&fragment.node.selection_set.node);
    }
    if aliases > limits.max_aliases {
        return Err(over_limit(
            "limits.max_aliases",
            format!("the request uses {aliases} aliases"),
            aliases,
            limits.max_aliases,
            ": split it into several requests",
        ));
    }
    for (_, operation) in document.operations.iter() {
        let mut seen = HashSet::new();
        let roots = count_root_fields(document, &operation.node.selection_set.node, &mut seen);
        if roots > limits.max_root_fields {
            return Err(over_limit(
                "limits.max_root_fields",
                format!("an operation selects {roots} root fields"),
                roots,
                limits.max_root_fields,
                ": split it into several requests",
            ));
        }
    }
    Ok(())
}

fn count_aliases(set: &SelectionSet) -> usize {
    set.items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(field) => {
                usize::from(field.node.alias.is_some())
                    + count_aliases(&field.node.selection_set.node)
            }
            Selection::InlineFragment(inline) => count_aliases(&inline.node.selection_set.node),
            // Fragment definitions are counted once each, where they are defined.
            Selection::FragmentSpread(_) => 0,
        })
        .sum()
}

/// Fields at the root of `set`, through fragments (each named fragment once).
fn count_root_fields<'d>(
    document: &'d ExecutableDocument,
    set: &'d SelectionSet,
    seen: &mut HashSet<&'d str>,
) -> usize {
    set.items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(_) => 1,
            Selection::InlineFragment(inline) => {
                count_root_fields(document, &inline.node.selection_set.node, seen)
            }
            Selection::FragmentSpread(spread) => {
                let name = spread.node.fragment_name.node.as_str();
                if !seen.insert(name) {
                    return 0;
                }
                document
                    .fragments
                    .get(name)
                    .map(|f| count_root_fields(document, &f.node.selection_set.node, seen))
                    .unwrap_or(0)
            }
        })
        .sum()
}

/// Depth and cost, from validation.
fn check_size(limits: &Limits, result: &ValidationResult) -> Result<(), ServerError> {
    if result.depth > limits.max_depth {
        return Err(over_limit(
            "limits.max_depth",
            format!("the query is nested too deep: depth {}", result.depth),
            result.depth,
            limits.max_depth,
            "",
        ));
    }
    if result.complexity > limits.max_complexity {
        return Err(over_limit(
            "limits.max_complexity",
            format!("the query is too complex: it costs {}", result.complexity),
            result.complexity,
            limits.max_complexity,
            "; a list multiplies what it selects by its page size, so ask for smaller pages (`first`/`last`) or fewer fields",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(limits: &Limits, query: &str) -> ServerResult<()> {
        let document = async_graphql::parser::parse_query(query).expect("parses");
        check_shape(limits, &document)
    }

    fn limit_of(err: &ServerError) -> Option<async_graphql::Value> {
        err.extensions
            .as_ref()
            .and_then(|e| e.get("limit"))
            .cloned()
    }

    #[test]
    fn aliases_are_counted_everywhere_once() {
        let limits = Limits {
            max_aliases: 3,
            ..Limits::default()
        };
        assert!(
            shape(
                &limits,
                "{ a: me { b: tenant { id } } ...F } fragment F on Query { c: me { id } }"
            )
            .is_ok()
        );
        let err = shape(
            &limits,
            "{ a: me { b: tenant { id } } ...F } fragment F on Query { c: me { id } d: me { id } }",
        )
        .expect_err("four aliases");
        assert_eq!(limit_of(&err), Some("limits.max_aliases".into()));
        assert!(err.message.contains("4 aliases, 1 more"), "{}", err.message);
    }

    #[test]
    fn root_fields_count_through_fragments() {
        let limits = Limits {
            max_root_fields: 2,
            ..Limits::default()
        };
        assert!(shape(&limits, "{ me { id } ... on Query { __typename } }").is_ok());
        let err = shape(
            &limits,
            "{ me { id } ...F ...F } fragment F on Query { __typename me2: me { id } }",
        )
        .expect_err("three roots");
        assert_eq!(limit_of(&err), Some("limits.max_root_fields".into()));
    }
}
