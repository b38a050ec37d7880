//! What a request pays to get its document: parsing the text (async-graphql's pest parser) or
//! cloning the document [`ParsedDocuments`] kept from an earlier request with the same text.
//!
//! `cargo bench -p governance-api --bench parse`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use governance_api::graphql::parsed::ParsedDocuments;

/// The load generator's step report, and a frontend's page of runs (a bigger document).
const QUERIES: [(&str, &str); 2] = [
    (
        "recordStep",
        "mutation($input: RecordStepInput!) { recordStep(input: $input) { action recorded } }",
    ),
    (
        "runs page",
        "query($first: Int!) { runs(first: $first) { totalCount edges { node { id status workflowId \
         agent startedAt endedAt stepCount tokensUsed costMicros terminationReason \
         snapshot { id contentHash policyCount } violations { id severity policyType stepIndex } \
         incident { id status severity title } } } pageInfo { hasNextPage endCursor } } }",
    ),
];

fn bench(c: &mut Criterion) {
    for (name, query) in QUERIES {
        let cache = ParsedDocuments::default();
        let document = async_graphql::parser::parse_query(query).expect("parses");
        cache.keep(query, &document);
        c.bench_function(&format!("parse {name}"), |b| {
            b.iter(|| async_graphql::parser::parse_query(black_box(query)).expect("parses"))
        });
        c.bench_function(&format!("kept {name}"), |b| {
            b.iter(|| cache.get(black_box(query)).expect("kept"))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
