//! python-sci: CPython with numpy, pandas, scipy and scikit-learn, baked
//! warm. Through the library (limits, isolation between sessions) and through
//! a real server (models trained in a run and called from another socket,
//! statistics of a DataFrame, a dataset read with pandas).

mod common;

use std::time::{Duration, Instant};

use common::server::{Client, Server, http, run_action};
use common::{program, run, run_with, short_limits};
use sandlot::{EndReason, Language, Limits};
use serde_json::{Value, json};

const SCI: Language = Language::PythonSci;

#[tokio::test]
async fn pandas_and_scikit_learn_are_ready_at_once() {
    let code = "import time, sys\n\
                t = time.perf_counter()\n\
                import numpy as np, pandas as pd, scipy.stats\n\
                from sklearn.linear_model import LinearRegression\n\
                print('imports took under a tenth of a second:', time.perf_counter() - t < 0.1)\n\
                print(pd.DataFrame({'a': np.arange(4)}).a.sum(), sys.argv[1:])";
    let mut p = program(&[("main.py", code)]);
    p.args = vec!["x".into()];
    let ran = run_with(SCI, p, Limits::default()).await;
    assert_eq!(ran.stdout, "imports took under a tenth of a second: True\n6 ['x']\n", "{}", ran.stderr);
    assert_eq!((ran.outcome.exit_code, ran.outcome.reason), (0, EndReason::Exit));
}

/// The warmed interpreter's objects are made immortal before it is baked
/// (src/guest/immortal.rs); a session's changes to them stay its own.
#[tokio::test]
async fn the_warmed_objects_are_immortal_and_still_each_sessions_own() {
    let code = "import sys, pandas\n\
                print(sys._is_immortal(pandas.DataFrame), sys._is_immortal(pandas.DataFrame({'a': [1]})))\n\
                pandas.DataFrame = None";
    let ran = run(SCI, &[("main.py", code)]).await;
    assert_eq!(ran.stdout, "True False\n", "{}", ran.stderr);
    let next = run(SCI, &[("main.py", "import pandas\nprint(pandas.DataFrame({'a': [1, 2]}).a.sum())")]).await;
    assert_eq!(next.stdout, "3\n", "{}", next.stderr);
}

#[tokio::test]
async fn errors_show_the_users_traceback_and_exit_1() {
    let ran = run(SCI, &[("main.py", "import helper\nhelper.boom()"), ("helper.py", "def boom():\n    1 / 0")]).await;
    assert_eq!(ran.outcome.exit_code, 1);
    assert!(ran.stderr.contains("helper.py\", line 2, in boom"), "{}", ran.stderr);
    assert!(ran.stderr.contains("ZeroDivisionError"), "{}", ran.stderr);
    assert!(!ran.stderr.contains("_sandlot"), "driver frames leak: {}", ran.stderr);
    let ran = run(SCI, &[("main.py", "import sys\nsys.exit(3)")]).await;
    assert_eq!(ran.outcome.exit_code, 3);
}

#[tokio::test]
async fn each_session_has_its_own_random_state_and_nothing_of_the_last() {
    let code = "import random, numpy as np\nprint(random.random(), np.random.rand())\n\
                print('leak' in globals())\nleak = np.ones(10_000_000)";
    let (a, b) = (run(SCI, &[("main.py", code)]).await, run(SCI, &[("main.py", code)]).await);
    assert_ne!(a.stdout.lines().next(), b.stdout.lines().next(), "two sessions drew the same numbers");
    assert_eq!(b.stdout.lines().nth(1), Some("False"));
}

/// The hash secret is in the memory baked at `prepare`, as the python
/// guest's is in its snapshot: every session shares it (see the README's limits).
#[tokio::test]
async fn every_session_shares_the_baked_hash_secret() {
    let code = "print(hash('abc'), hash(b'abc'))";
    let (a, b) = (run(SCI, &[("main.py", code)]).await, run(SCI, &[("main.py", code)]).await);
    assert_eq!(a.outcome.exit_code, 0, "{}", a.stderr);
    assert_eq!(a.stdout, b.stdout);
}

#[tokio::test]
async fn the_deadline_stops_busy_and_sleeping_code() {
    for code in ["while True:\n    pass", "import time\nprint('sleeping', flush=True)\ntime.sleep(30)"] {
        let started = Instant::now();
        let ran = run_with(SCI, program(&[("main.py", code)]), short_limits()).await;
        assert_eq!((ran.outcome.reason, ran.outcome.exit_code), (EndReason::Timeout, 124), "{code}");
        assert!(started.elapsed() < Duration::from_secs(4), "{code} took {:?}", started.elapsed());
    }
}

#[tokio::test]
async fn the_memory_limit_counts_what_a_session_allocates() {
    let limits = Limits::default().with_memory_bytes(64 << 20);
    let code = "import numpy as np\n\
                try:\n    np.ones(40 << 20)\nexcept MemoryError:\n    print('refused')\n\
                small = np.ones(1 << 20)\nprint('still fine', small.sum())\n\
                big = np.ones(40 << 20)";
    let ran = run_with(SCI, program(&[("main.py", code)]), limits).await;
    assert_eq!(ran.stdout, "refused\nstill fine 1048576.0\n", "{}", ran.stderr);
    assert_eq!((ran.outcome.reason, ran.outcome.exit_code), (EndReason::Memory, 137), "{}", ran.stderr);
    assert_eq!(ran.outcome.message.as_deref(), Some("the memory limit of 64 MiB was reached"));
}

#[tokio::test]
async fn the_host_stays_out_of_reach() {
    let code = "import os\nprint(sorted(os.environ))\n\
                for p in ['/etc/passwd', '/usr/local/lib/python315.zip']:\n    \
                    try:\n        open(p, 'rb').read(1); print('read', p)\n    \
                    except OSError:\n        print('refused', p)\n\
                for p in ['/usr/local/lib/x', '/tmp/matplotlib/x', '/data/x', '/x']:\n    \
                    try:\n        open(p, 'w').write('x'); print('WROTE', p)\n    except OSError:\n        pass\n\
                print('no writes')\n\
                try:\n    import socket\n    socket.create_connection(('127.0.0.1', 80), timeout=1)\nexcept (OSError, ImportError, AttributeError):\n    print('no network')";
    let mut p = program(&[("main.py", code)]);
    p.env = vec![("MINE".into(), "1".into())];
    let ran = run_with(SCI, p, Limits::default()).await;
    assert_eq!(
        ran.stdout, "['MINE']\nrefused /etc/passwd\nread /usr/local/lib/python315.zip\nno writes\nno network\n",
        "{}",
        ran.stderr
    );
}

const TRAIN: &str = r#"
import numpy as np, pandas as pd
from sklearn.linear_model import LinearRegression
from sklearn.ensemble import RandomForestClassifier
import sandlot

x = np.arange(50, dtype=float).reshape(-1, 1)
line = LinearRegression().fit(x, 2 * x.ravel() + 1)
forest = RandomForestClassifier(n_estimators=20, random_state=0).fit(x, (x.ravel() > 25).astype(int))
sandlot.save_model("line", line)
sandlot.save_model("forest", forest)
df = pd.DataFrame({"height": [1.0, 2.0, 3.0, 4.0], "weight": [10, 20, 30, 100]})
sandlot.set_placeholder("people", df)
print("trained")
"#;

async fn ask(client: &mut Client, id: &str, name: &str, data: Value) -> Value {
    client.send(json!({ "action": "run_model", "model": { "sessionId": id, "name": name, "data": data } })).await;
    client.recv().await
}

#[tokio::test]
async fn models_trained_in_a_run_predict_from_another_connection() {
    let server = Server::start(&[]);
    let mut trainer = Client::connect(&server.ws_url("/")).await;
    let request = json!({ "action": "run", "python-sci": { "files": [{ "filename": "train.py", "content": TRAIN }] } });
    let (id, stdout, finished) = run_action(&mut trainer, request).await;
    assert_eq!((stdout.as_str(), finished["status"].clone()), ("trained\n", json!("finished")), "{finished}");

    let mut client = Client::connect(&server.ws_url("/")).await;
    let xs = [0.0, 7.5, 100.0];
    let reply = ask(&mut client, &id, "line", json!(xs.iter().map(|x| [x]).collect::<Vec<_>>())).await;
    let predicted: Vec<f64> = serde_json::from_value(reply["prediction"].clone()).unwrap_or_else(|_| panic!("{reply}"));
    for (x, y) in xs.iter().zip(predicted) {
        assert!((y - (2.0 * x + 1.0)).abs() < 1e-6, "line({x}) = {y}");
    }
    let reply = ask(&mut client, &id, "forest", json!([[3], [10], [40], [49]])).await;
    let expected: Vec<i64> = [3, 10, 40, 49].iter().map(|&x| i64::from(x > 25)).collect();
    assert_eq!(reply["prediction"], json!(expected), "{reply}");
    let reply = ask(&mut client, &id, "forest", json!("not rows")).await;
    assert_eq!(reply["code"], "model_error", "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("Error"), "{reply}");

    client.send(json!({ "action": "get_stats", "placeholder": { "sessionId": id, "name": "people" } })).await;
    let stats = client.recv().await["stats"].clone();
    assert_eq!(stats["height"]["mean"], json!(2.5), "{stats}");
    assert_eq!((stats["weight"]["min"].clone(), stats["weight"]["max"].clone()), (json!(10.0), json!(100.0)));
    assert_eq!(stats["weight"]["mean"], json!(40.0));
    assert_eq!(stats["weight"]["count"], json!(4));
}

#[tokio::test]
async fn pandas_reads_a_dataset_and_run_model_takes_a_dataset_path() {
    let server = Server::start(&[]);
    let csv = "x,label\n1,0\n2,0\n30,1\n40,1\n";
    let (_, created) = http(
        &server,
        "POST",
        "/v1/csv/dataset",
        Some(&json!({ "name": "points", "input_data_size": csv.len() }).to_string()),
    )
    .await;
    let (uuid, file) = (created["uuid"].as_str().unwrap(), created["uuid_input_file"].as_str().unwrap());
    let mut upload = Client::connect(&server.ws_url("/")).await;
    upload.send(json!({ "uuid": file, "target": "file_upload", "framing": "raw" })).await;
    assert_eq!(upload.recv().await["success"], true);
    let mut frame = 0u64.to_le_bytes().to_vec();
    frame.extend_from_slice(csv.as_bytes());
    upload.send_binary(frame).await;
    assert_eq!(upload.recv().await["complete"], true);
    let body = json!({ "uuid": uuid, "uuid_input_file": file }).to_string();
    assert_eq!(http(&server, "PUT", "/v1/csv/dataset", Some(&body)).await.0, 200);

    let code = "import pandas as pd, sandlot\n\
                from sklearn.linear_model import LinearRegression\n\
                df = pd.read_csv('/data/points.csv')\n\
                print(len(df), df.x.sum(), df.label.mean())\n\
                sandlot.save_model('line', LinearRegression().fit(df[['x', 'label']].values, 3 * df.x + 1))";
    let mut client = Client::connect(&server.ws_url("/")).await;
    let request = json!({ "action": "run", "python-sci": { "files": [{ "filename": "m.py", "content": code }] } });
    let (id, stdout, _) = run_action(&mut client, request).await;
    assert_eq!(stdout, "4 73 0.5\n");
    client
        .send(json!({ "action": "run_model", "model": { "sessionId": id, "name": "line", "is_data": false, "data": "/data/points.csv" } }))
        .await;
    let reply = client.recv().await;
    let predicted: Vec<f64> = serde_json::from_value(reply["prediction"].clone()).unwrap_or_else(|_| panic!("{reply}"));
    for (x, y) in [1.0, 2.0, 30.0, 40.0].iter().zip(&predicted) {
        assert!((y - (3.0 * x + 1.0)).abs() < 1e-6, "line({x}) = {y}");
    }
    assert_eq!(predicted.len(), 4);
}

#[tokio::test]
async fn fuel_and_output_limits_apply() {
    let ran =
        run_with(SCI, program(&[("main.py", "while True:\n    pass")]), Limits::default().with_fuel(2_000_000_000))
            .await;
    assert_eq!((ran.outcome.reason, ran.outcome.exit_code), (EndReason::Fuel, 124));
    let limits = Limits::default().with_output_bytes(10_000);
    let ran = run_with(SCI, program(&[("main.py", "while True:\n    print('x' * 100)")]), limits).await;
    assert_eq!((ran.outcome.reason, ran.outcome.exit_code), (EndReason::OutputLimit, 137));
    assert!(ran.stdout.len() <= 10_000, "{}", ran.stdout.len());
}

#[tokio::test]
async fn a_matplotlib_figure_becomes_a_png_placeholder() {
    let code = "import matplotlib.pyplot as plt, sandlot\n\
                fig, ax = plt.subplots()\nax.plot([1, 3, 2])\nax.set_title('sales')\n\
                sandlot.set_placeholder('chart', fig)";
    let ran = run(SCI, &[("main.py", code)]).await;
    assert_eq!(ran.outcome.exit_code, 0, "{}", ran.stderr);
    let chart = ran.session.placeholders().get("chart").expect("the chart was saved");
    assert_eq!(chart["type"], "image/png");
    let png = chart["base64"].as_str().unwrap();
    assert!(png.starts_with("iVBORw0KGgo") && png.len() > 5_000, "not a PNG: {}", &png[..png.len().min(40)]);
}
