#[test]
fn schema_graphql_matches_the_served_schema() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
        .expect("schema.graphql exists at the top of the repository");
    let served = settings_api::graphql::sdl();
    assert!(
        committed == served,
        "schema.graphql differs from the served schema; regenerate it with \
         `cargo run -- schema > schema.graphql` and commit it"
    );
}
