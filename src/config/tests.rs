//! Parsing tests: defaults, precedence, errors (never echoing secrets), the
//! help text, tokens, TLS and the ICE-server links.

use super::opts::OPTS;
use super::*;
use std::collections::HashMap;

fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<ConfigOutcome, String> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_args_and_env(args.iter().map(|s| s.to_string()), move |k| {
        env.get(k).cloned()
    })
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Config {
    match parse(args, env) {
        Ok(ConfigOutcome::Run(c)) => c,
        other => panic!("expected Run, got {other:?}"),
    }
}

#[test]
fn defaults() {
    let c = run(&[], &[]);
    assert_eq!(c, Config::default());
    assert_eq!(c.http_addr, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(c.udp_addr, "0.0.0.0:8189".parse().unwrap());
    assert!(c.public_ips.is_empty());
    assert_eq!(c.stun_urls, vec![DEFAULT_STUN_URL.to_string()]);
    assert!(c.turn_urls.is_empty());
    assert_eq!((c.max_rooms, c.max_sessions), (1000, 10_000));
}

#[test]
fn env_then_flags_override() {
    let env = [
        ("WISP_HTTP_ADDR", "127.0.0.1:9000"),
        ("WISP_UDP_ADDR", "[::]:5000"),
        ("WISP_PUBLIC_IPS", "1.2.3.4, 2001:db8::1"),
        ("WISP_MAX_ROOMS", "5"),
    ];
    let c = run(&[], &env);
    assert_eq!(c.http_addr, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(c.udp_addr, "[::]:5000".parse().unwrap());
    assert_eq!(
        c.public_ips,
        vec![
            "1.2.3.4".parse::<IpAddr>().unwrap(),
            "2001:db8::1".parse().unwrap()
        ]
    );
    assert_eq!(c.max_rooms, 5);

    let c = run(
        &[
            "--http-addr",
            "127.0.0.1:1",
            "--max-rooms=7",
            "--max-sessions",
            "9",
        ],
        &env,
    );
    assert_eq!(c.http_addr, "127.0.0.1:1".parse().unwrap());
    assert_eq!(c.max_rooms, 7);
    assert_eq!(c.max_sessions, 9);
    // Untouched by flags: still from env.
    assert_eq!(c.udp_addr, "[::]:5000".parse().unwrap());
}

#[test]
fn stun_empty_means_none() {
    assert!(run(&[], &[("WISP_STUN_URLS", "")]).stun_urls.is_empty());
    assert!(run(&["--stun-urls="], &[]).stun_urls.is_empty());
    let c = run(&["--stun-urls", "stun:a:1, stun:b:2"], &[]);
    assert_eq!(c.stun_urls, vec!["stun:a:1", "stun:b:2"]);
}

#[test]
fn errors() {
    for (args, env, needle) in [
        (vec!["--nope"], vec![], "unknown flag"),
        (vec!["--nope=1"], vec![], "unknown flag"),
        (vec!["stray"], vec![], "unexpected argument"),
        (vec!["--http-addr"], vec![], "needs a value"),
        (vec!["--http-addr", "nonsense"], vec![], "--http-addr"),
        (vec![], vec![("WISP_UDP_ADDR", "x")], "WISP_UDP_ADDR"),
        (vec!["--public-ips", "1.2.3"], vec![], "--public-ips"),
        (vec!["--max-rooms", "0"], vec![], "at least 1"),
        (vec!["--max-sessions", "-1"], vec![], "--max-sessions"),
        (vec!["--stun-urls", "http://x"], vec![], "must start with"),
        (vec!["--stun-urls", "stun:a\r\nX: y"], vec![], "not allowed"),
        (vec!["--turn-urls", "turn:t:3478"], vec![], "TURN URLs need"),
        (
            vec!["--turn-urls", "turn:t", "--turn-username", "u"],
            vec![],
            "TURN URLs need",
        ),
    ] {
        let err = parse(&args, &env).expect_err(&format!("{args:?} {env:?}"));
        assert!(err.contains(needle), "{err:?} lacks {needle:?}");
        assert!(!err.contains('\n'), "{err:?}");
    }
}

#[test]
fn credential_never_in_errors_or_debug() {
    let err = parse(&["--turn-credential", "sec\nret"], &[]).unwrap_err();
    assert!(!err.contains("sec"), "{err}");
    let c = run(
        &[
            "--turn-urls=turn:t:3478",
            "--turn-username=u",
            "--turn-credential=hunter2",
        ],
        &[],
    );
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn tokens_and_tls() {
    let c = run(
        &[
            "--admin-token=adm1n",
            "--tls-cert",
            "/c.pem",
            "--tls-key=/k.pem",
        ],
        &[
            ("WISP_PUBLISH_TOKEN", "pub-s3cret"),
            ("WISP_VIEW_TOKEN", ""),
        ],
    );
    assert_eq!(c.publish_token, Some(Token::new("pub-s3cret").unwrap()));
    assert_eq!(c.view_token, None);
    assert_eq!(c.tls(), Some((Path::new("/c.pem"), Path::new("/k.pem"))));
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("s3cret") && !dbg.contains("adm1n"), "{dbg}");
    let auth = c.auth().unwrap();
    assert!(!auth.is_open());
    assert_eq!(
        auth.check(auth::Need::Publish, Some("r"), Some("Bearer adm1n")),
        auth::Decision::Allow
    );
    // Errors never show the token; TLS needs both files.
    let e = parse(&["--view-token", "bad s3cret"], &[]).unwrap_err();
    assert!(e.contains("--view-token") && !e.contains("s3cret"), "{e}");
    let e = parse(&["--tls-cert=/c.pem"], &[]).unwrap_err();
    assert!(e.contains("WISP_TLS_KEY"), "{e}");
    // A bad tokens file is an error naming the file.
    let dir = std::env::temp_dir().join(format!("wisp-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("tokens.json");
    std::fs::write(&f, r#"{"r": {"publish": 1}}"#).unwrap();
    let e = run(&["--tokens-file", f.to_str().unwrap()], &[])
        .auth()
        .unwrap_err();
    assert!(
        e.contains("tokens.json") && e.contains("must be a string"),
        "{e}"
    );
    std::fs::write(&f, r#"{"r": {"publish": "room-pub"}}"#).unwrap();
    let a = run(&[], &[("WISP_TOKENS_FILE", f.to_str().unwrap())])
        .auth()
        .unwrap();
    assert_eq!(
        a.check(auth::Need::Publish, Some("r"), Some("Bearer room-pub")),
        auth::Decision::Allow
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cluster_settings() {
    assert_eq!(run(&[], &[]).cluster, None);
    let e = parse(&["--redis-url=redis://127.0.0.1:6379"], &[]).unwrap_err();
    assert!(e.contains("WISP_NODE_URL"), "{e}");
    let e = parse(&["--redis-url=redis://:pw@h:0"], &[]).unwrap_err();
    assert!(e.contains("--redis-url") && !e.contains("pw"), "{e}");
    let env = [
        ("WISP_REDIS_URL", "redis://:pw@127.0.0.1:6379/1"),
        ("WISP_NODE_URL", "http://10.0.0.2:8080"),
        ("WISP_ADMIN_TOKEN", "adm1n"),
    ];
    let e = parse(&[], &env).unwrap_err();
    assert!(e.contains("WISP_CLUSTER_TOKEN"), "{e}");
    let c = run(&["--cluster-token", "n0des"], &env).cluster.unwrap();
    assert_eq!(
        (c.node_id.as_str(), c.node_url.as_str()),
        ("10.0.0.2-8080", "http://10.0.0.2:8080")
    );
    let c = run(&["--cluster-token=n0des", "--node-id=n1"], &env);
    assert_eq!(c.cluster.as_ref().unwrap().node_id, "n1");
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("pw@") && !dbg.contains("n0des"), "{dbg}");
}

#[test]
fn help() {
    let Ok(ConfigOutcome::Help(h)) = parse(&["--max-rooms", "3", "-h"], &[]) else {
        panic!("no help");
    };
    for o in &OPTS {
        assert!(h.contains(o.flag) && h.contains(o.env), "{}", o.flag);
    }
    assert!(h.contains("RUST_LOG"));
    assert!(h.contains("0.0.0.0:8080") && h.contains(DEFAULT_STUN_URL));
    assert!(matches!(
        parse(&["--help"], &[]),
        Ok(ConfigOutcome::Help(_))
    ));
}

#[test]
fn links() {
    let c = run(
        &[
            "--stun-urls=stun:s1:3478,stun:s2:19302",
            "--turn-urls=turn:t:3478?transport=udp,turns:t:5349",
            "--turn-username=u\"1",
            "--turn-credential=p\\1",
        ],
        &[],
    );
    assert_eq!(
        c.ice_server_links(),
        vec![
            "<stun:s1:3478>; rel=\"ice-server\"".to_string(),
            "<stun:s2:19302>; rel=\"ice-server\"".to_string(),
            "<turn:t:3478?transport=udp>; rel=\"ice-server\"; username=\"u\\\"1\"; \
             credential=\"p\\\\1\"; credential-type=\"password\""
                .to_string(),
            "<turns:t:5349>; rel=\"ice-server\"; username=\"u\\\"1\"; \
             credential=\"p\\\\1\"; credential-type=\"password\""
                .to_string(),
        ]
    );
    assert!(run(&["--stun-urls="], &[]).ice_server_links().is_empty());
}

#[test]
fn help_defaults_are_the_defaults() {
    // Every default the help shows, given as a value, parses to Config::default().
    let env: Vec<(&str, &str)> = OPTS.iter().map(|o| (o.env, o.default)).collect();
    assert_eq!(run(&[], &env), Config::default());
}

#[test]
fn max_load_is_a_share_of_one_core_or_off() {
    use super::MaxLoad;
    assert_eq!(MaxLoad::parse("0.5"), Ok(MaxLoad(0.5)));
    assert_eq!(MaxLoad::parse(" OFF "), Ok(MaxLoad(f64::INFINITY)));
    for bad in ["0", "1.5", "-0.2", "x", ""] {
        assert!(MaxLoad::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn workers_are_a_count_or_auto() {
    assert_eq!(run(&[], &[]).workers, Workers::Count(1));
    assert_eq!(
        run(&["--workers", "4"], &[("WISP_WORKERS", "2")]).workers,
        Workers::Count(4)
    );
    assert_eq!(run(&[], &[("WISP_WORKERS", "AUTO")]).workers, Workers::Auto);
    for bad in ["0", "-1", "x", "257"] {
        assert!(parse(&["--workers", bad], &[]).is_err(), "{bad}");
    }
    assert_eq!(Workers::Count(3).resolve(), 3);
    assert!(Workers::Auto.resolve() >= 1);
}
