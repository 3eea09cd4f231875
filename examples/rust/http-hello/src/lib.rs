//! http-hello: a wasi:http/proxy component. Every request is logged to stdout
//! as `request METHOD PATH`, then routed by method and path:
//!
//! | Request                | Response                                                     |
//! |------------------------|--------------------------------------------------------------|
//! | `GET /`                | 200 `Hello from berth!`                                      |
//! | `GET /env?name=KEY`    | 200 with the value of environment variable KEY, 404 if unset |
//! | `GET /trap`            | panics, so the instance traps                                |
//! | `GET /alloc?mib=N`     | allocates and touches N MiB, then 200                        |
//! | `GET /sleep?ms=N`      | sleeps N ms on the monotonic clock, then 200                 |
//! | `GET /spin`            | burns CPU forever and never answers                          |
//! | `GET /fetch?url=URL`   | outgoing GET to URL: 200 with upstream status and body, or   |
//! |                        | 502 with the error (the host denies it unless allowed)       |
//! | `POST /echo`           | 200 with the request body and the request's content-type     |
//! | anything else          | 404 `not found`                                              |
//!
//! Query values are percent-decoded, so a URL containing `&` or `?` must be
//! encoded (`curl -G --data-urlencode url=... http://host/fetch`).

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::outgoing_handler;
use wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingRequest,
    OutgoingResponse, ResponseOutparam, Scheme,
};
use wasi::io::streams::StreamError;

const TEXT: &str = "text/plain";

struct HttpHello;

wasi::http::proxy::export!(HttpHello);

impl Guest for HttpHello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let method = request.method();
        let target = request.path_with_query().unwrap_or_else(|| "/".to_string());
        let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
        println!("request {} {}", method_name(&method), path);

        match (&method, path) {
            (Method::Get, "/") => respond(out, 200, TEXT, b"Hello from berth!\n"),
            (Method::Get, "/env") => env(out, query),
            (Method::Get, "/trap") => panic!("trap requested by GET /trap"),
            (Method::Get, "/alloc") => alloc(out, query),
            (Method::Get, "/sleep") => sleep(out, query),
            (Method::Get, "/spin") => spin(),
            (Method::Get, "/fetch") => fetch(out, query),
            (Method::Post, "/echo") => echo(out, request),
            _ => respond(out, 404, TEXT, b"not found\n"),
        }
    }
}

fn env(out: ResponseOutparam, query: &str) {
    let Some(name) = query_param(query, "name") else {
        return respond(out, 400, TEXT, b"missing parameter: name\n");
    };
    match std::env::var(&name) {
        Ok(value) => respond(out, 200, TEXT, format!("{value}\n").as_bytes()),
        Err(_) => respond(out, 404, TEXT, b"not set\n"),
    }
}

fn alloc(out: ResponseOutparam, query: &str) {
    let Some(mib) = query_param(query, "mib").and_then(|v| v.parse::<usize>().ok()) else {
        return respond(out, 400, TEXT, b"missing or invalid parameter: mib\n");
    };
    let Some(bytes) = mib.checked_mul(1 << 20) else {
        return respond(out, 400, TEXT, format!("{mib} MiB is too large\n").as_bytes());
    };
    let mut block: Vec<u8> = Vec::new();
    if block.try_reserve_exact(bytes).is_err() {
        return respond(out, 500, TEXT, format!("allocating {mib} MiB failed\n").as_bytes());
    }
    // Write one byte per 4 KiB page so the memory is really used.
    let pages = block.spare_capacity_mut();
    for i in (0..bytes).step_by(4096) {
        pages[i].write(1);
    }
    std::hint::black_box(pages);
    drop(block);
    respond(out, 200, TEXT, format!("allocated {mib} MiB\n").as_bytes());
}

fn sleep(out: ResponseOutparam, query: &str) {
    let Some(ms) = query_param(query, "ms").and_then(|v| v.parse::<u64>().ok()) else {
        return respond(out, 400, TEXT, b"missing or invalid parameter: ms\n");
    };
    wasi::clocks::monotonic_clock::subscribe_duration(ms.saturating_mul(1_000_000)).block();
    respond(out, 200, TEXT, format!("slept {ms} ms\n").as_bytes());
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn fetch(out: ResponseOutparam, query: &str) {
    let Some(url) = query_param(query, "url") else {
        return respond(out, 400, TEXT, b"missing parameter: url\n");
    };
    match get(&url) {
        Ok((status, body)) => {
            let mut text = format!("upstream status {status}\n").into_bytes();
            text.extend_from_slice(&body);
            respond(out, 200, TEXT, &text);
        }
        Err(err) => respond(out, 502, TEXT, format!("fetch {url}: {err}\n").as_bytes()),
    }
}

/// Makes an outgoing `GET url` through wasi:http/outgoing-handler and returns
/// the response status and body.
fn get(url: &str) -> Result<(u16, Vec<u8>), String> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        return Err("only http:// and https:// URLs are supported".to_string());
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err("URL has no host".to_string());
    }
    let path = if path.starts_with('?') { format!("/{path}") } else { path.to_string() };

    let request = OutgoingRequest::new(Fields::new());
    request.set_method(&Method::Get).map_err(|()| "invalid method".to_string())?;
    request.set_scheme(Some(&scheme)).map_err(|()| "invalid scheme".to_string())?;
    request.set_authority(Some(authority)).map_err(|()| format!("invalid authority {authority:?}"))?;
    request.set_path_with_query(Some(&path)).map_err(|()| format!("invalid path {path:?}"))?;

    let future = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    let response = loop {
        match future.get() {
            Some(result) => break result,
            None => future.subscribe().block(),
        }
    };
    let response = response
        .map_err(|()| "response already taken".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let body = response.consume().map_err(|()| "response body already taken".to_string())?;
    let body = read_body(body)?;
    Ok((status, body))
}

fn echo(out: ResponseOutparam, request: IncomingRequest) {
    let content_type = {
        let headers = request.headers();
        let value = headers.get("content-type").into_iter().next();
        value.map(|v| String::from_utf8_lossy(&v).into_owned())
    };
    let body = match request.consume() {
        Ok(body) => read_body(body),
        Err(()) => Err("request body already taken".to_string()),
    };
    match body {
        Ok(body) => {
            let content_type = content_type.as_deref().unwrap_or("application/octet-stream");
            respond(out, 200, content_type, &body);
        }
        Err(err) => respond(out, 500, TEXT, format!("reading request body: {err}\n").as_bytes()),
    }
}

/// Reads an incoming body (request or response) to its end.
fn read_body(body: IncomingBody) -> Result<Vec<u8>, String> {
    let mut data = Vec::new();
    {
        let stream = body.stream().map_err(|()| "body stream already taken".to_string())?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => data.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => return Err(e.to_debug_string()),
            }
        }
    }
    drop(IncomingBody::finish(body));
    Ok(data)
}

/// Sends a complete response with a content-type and content-length.
fn respond(out: ResponseOutparam, status: u16, content_type: &str, body: &[u8]) {
    let headers = Fields::from_list(&[
        ("content-type".to_string(), content_type.as_bytes().to_vec()),
        ("content-length".to_string(), body.len().to_string().into_bytes()),
    ])
    .unwrap_or_else(|_| Fields::new());
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("valid status code");
    let response_body = response.body().expect("response body taken once");
    ResponseOutparam::set(out, Ok(response));
    {
        let stream = response_body.write().expect("body stream taken once");
        for chunk in body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                break; // the client went away
            }
        }
    }
    let _ = OutgoingBody::finish(response_body, None);
}

fn method_name(method: &Method) -> &str {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Other(other) => other,
    }
}

/// Returns the percent-decoded value of `key` in a `a=1&b=2` query string.
fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
