//! One user never sees or changes another's settings.

use serde_json::json;

use crate::helpers::*;

both_backends! {
    async fn one_user_never_sees_or_changes_another_users_settings(app) {
        let alice = app.token("alice");
        let bob = app.token("bob");
        app.set(&alice, "layout", json!("dark")).await;
        app.set(&alice, "scoped", json!(1)).await;

        assert_eq!(app.values(&bob).await, json!({}));
        let read = r#"{ setting(key: "layout") { value } me { settings { key } } }"#;
        assert_eq!(app.data(&bob, read, json!({})).await, json!({"setting": null, "me": {"settings": []}}));

        let delete = r#"mutation { deleteSetting(key: "layout") }"#;
        assert_eq!(app.data(&bob, delete, json!({})).await, json!({"deleteSetting": false}));
        let patch = r#"mutation { updateSettings(patch: {layout: {mode: "x"}, scoped: null}) { key version } }"#;
        assert_eq!(
            app.data(&bob, patch, json!({})).await,
            json!({"updateSettings": [{"key": "layout", "version": 1}]})
        );
        app.set(&bob, "scoped", json!(2)).await;

        assert_eq!(app.values(&alice).await, json!({"scoped": 1, "layout": "dark"}));
        assert_eq!(app.values(&bob).await, json!({"scoped": 2, "layout": {"mode": "x"}}));
    }
}
