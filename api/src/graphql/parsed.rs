//! Parsed documents kept by their text, so a client that sends the same operation again (an
//! integrator's `recordStep` on every step of every run) is not parsed again.
//!
//! Parsing is async-graphql's pest grammar, about 3 % of the server's CPU under step load
//! (perf, session 17); a kept document is cloned instead. Validation and the operation limits'
//! depth and cost checks still run on every request. Only documents that parsed and passed the
//! limits checked at parse time are kept (this extension sits outside
//! [`super::limits::OperationLimits`]), so a document refused once is refused every time, and a
//! kept one is what parsing its text again would give. The cache is bounded in entries and in
//! the length of the texts it keeps; a text it does not hold is parsed as before.

use std::{
    num::NonZeroUsize,
    sync::{Arc, Mutex},
};

use async_graphql::{
    ServerResult, Variables,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery},
    parser::types::ExecutableDocument,
};
use lru::LruCache;

/// Documents kept at most (the least recently used goes first).
const CAPACITY: NonZeroUsize = NonZeroUsize::new(128).expect("not zero");

/// The longest query text kept, in bytes; a longer one is parsed every time.
const LONGEST: usize = 8 * 1024;

/// The extension, with the cache its requests share.
#[derive(Clone)]
pub struct ParsedDocuments(Arc<Mutex<LruCache<String, Arc<ExecutableDocument>>>>);

impl Default for ParsedDocuments {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(LruCache::new(CAPACITY))))
    }
}

impl ParsedDocuments {
    /// The document parsed from `query`, if kept.
    pub fn get(&self, query: &str) -> Option<ExecutableDocument> {
        let kept = self.lock().get(query).cloned()?;
        // Cloned outside the lock.
        Some(ExecutableDocument::clone(&kept))
    }

    /// Keep `document`, parsed from `query`, unless the text is too long to keep.
    pub fn keep(&self, query: &str, document: &ExecutableDocument) {
        if query.len() <= LONGEST {
            let document = Arc::new(document.clone());
            self.lock().put(query.to_string(), document);
        }
    }

    /// How many documents are kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, Arc<ExecutableDocument>>> {
        // The cache holds no invariant a panic elsewhere could break.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ExtensionFactory for ParsedDocuments {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Extension for ParsedDocuments {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        if let Some(document) = self.get(query) {
            return Ok(document);
        }
        let document = next.run(ctx, query, variables).await?;
        self.keep(query, &document);
        Ok(document)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_graphql::{EmptyMutation, EmptySubscription, Object, Request, Schema};

    use super::*;
    use crate::{config::Limits, graphql::limits::OperationLimits};

    struct Query;

    #[Object]
    impl Query {
        async fn echo(&self, text: String) -> String {
            text
        }
    }

    /// Counts the documents actually parsed (it sits inside the cache, where the parser is).
    #[derive(Clone, Default)]
    struct Parses(Arc<AtomicUsize>);

    impl ExtensionFactory for Parses {
        fn create(&self) -> Arc<dyn Extension> {
            Arc::new(self.clone())
        }
    }

    #[async_trait::async_trait]
    impl Extension for Parses {
        async fn parse_query(
            &self,
            ctx: &ExtensionContext<'_>,
            query: &str,
            variables: &Variables,
            next: NextParseQuery<'_>,
        ) -> ServerResult<ExecutableDocument> {
            self.0.fetch_add(1, Ordering::SeqCst);
            next.run(ctx, query, variables).await
        }
    }

    fn schema(
        cache: &ParsedDocuments,
        parses: &Parses,
        limits: Limits,
    ) -> Schema<Query, EmptyMutation, EmptySubscription> {
        Schema::build(Query, EmptyMutation, EmptySubscription)
            .extension(cache.clone())
            .extension(OperationLimits(limits))
            .extension(parses.clone())
            .finish()
    }

    #[tokio::test]
    async fn the_same_text_is_parsed_once_and_answered_with_its_own_variables() {
        let (cache, parses) = (ParsedDocuments::default(), Parses::default());
        let schema = schema(&cache, &parses, Limits::default());
        let query = "query($t: String!) { echo(text: $t) }";
        for text in ["one", "two", "three"] {
            let response = schema
                .execute(
                    Request::new(query)
                        .variables(Variables::from_json(serde_json::json!({ "t": text }))),
                )
                .await;
            assert!(response.errors.is_empty(), "{:?}", response.errors);
            assert_eq!(
                response.data.into_json().expect("json"),
                serde_json::json!({ "echo": text })
            );
        }
        assert_eq!(parses.0.load(Ordering::SeqCst), 1, "parsed once");
        assert_eq!(cache.len(), 1);

        // Another text is another document.
        let response = schema.execute(r#"{ echo(text: "x") }"#).await;
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        assert_eq!(parses.0.load(Ordering::SeqCst), 2);
        assert_eq!(cache.len(), 2);
    }

    #[tokio::test]
    async fn what_fails_to_parse_or_breaks_a_limit_is_not_kept_and_is_refused_every_time() {
        let (cache, parses) = (ParsedDocuments::default(), Parses::default());
        let limits = Limits {
            max_aliases: 1,
            ..Limits::default()
        };
        let schema = schema(&cache, &parses, limits);
        let aliased = r#"{ a: echo(text: "a") b: echo(text: "b") }"#;
        for round in 1..=2 {
            let response = schema.execute(aliased).await;
            assert_eq!(response.errors.len(), 1, "round {round}");
            assert!(
                response.errors[0].message.contains("aliases"),
                "{}",
                response.errors[0].message
            );
            let broken = schema.execute("{ echo(text: ").await;
            assert_eq!(broken.errors.len(), 1, "round {round}");
        }
        assert_eq!(parses.0.load(Ordering::SeqCst), 4, "parsed each time");
        assert!(cache.is_empty());
    }

    #[tokio::test]
    async fn the_cache_is_bounded_in_entries_and_in_the_length_of_what_it_keeps() {
        let (cache, parses) = (ParsedDocuments::default(), Parses::default());
        let schema = schema(&cache, &parses, Limits::default());
        for i in 0..CAPACITY.get() + 10 {
            let response = schema.execute(format!(r#"{{ echo(text: "{i}") }}"#)).await;
            assert!(response.errors.is_empty(), "{:?}", response.errors);
        }
        assert_eq!(cache.len(), CAPACITY.get());
        // The oldest went first; the newest is kept.
        assert!(cache.get(r#"{ echo(text: "0") }"#).is_none());
        assert!(
            cache
                .get(&format!(r#"{{ echo(text: "{}") }}"#, CAPACITY.get() + 9))
                .is_some()
        );

        let long = format!(r#"{{ echo(text: "{}") }}"#, "x".repeat(LONGEST));
        let before = parses.0.load(Ordering::SeqCst);
        for _ in 0..2 {
            let response = schema.execute(long.as_str()).await;
            assert!(response.errors.is_empty(), "{:?}", response.errors);
        }
        assert_eq!(parses.0.load(Ordering::SeqCst), before + 2);
        assert!(cache.get(&long).is_none());
    }
}
