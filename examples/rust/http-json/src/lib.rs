//! http-json: a tiny JSON API as a wasi:http/proxy component. It keeps no
//! state: the item list is fixed and a created item always gets id 2.
//!
//! | Request                          | Response                                 |
//! |----------------------------------|------------------------------------------|
//! | `GET /items`                     | 200 `[{"id":1,"name":"berth"}]`          |
//! | `POST /items` `{"name":"x"}`     | 201 `{"id":2,"name":"x"}`                |
//! | `GET /health`                    | 200 `{"status":"ok"}`                    |
//! | anything else                    | 404 `{"error":"not found"}`              |
//!
//! A `POST /items` body that is not a JSON object with a string `name` gets
//! 400 `{"error":"..."}`. Every request is logged to stdout as
//! `request METHOD PATH`.

use serde_json::Value;
use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse,
    ResponseOutparam,
};
use wasi::io::streams::StreamError;

struct HttpJson;

wasi::http::proxy::export!(HttpJson);

impl Guest for HttpJson {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let method = request.method();
        let target = request.path_with_query().unwrap_or_else(|| "/".to_string());
        let path = target.split_once('?').map_or(target.as_str(), |(path, _)| path);
        println!("request {} {}", method_name(&method), path);

        match (&method, path) {
            (Method::Get, "/items") => respond(out, 200, r#"[{"id":1,"name":"berth"}]"#),
            (Method::Post, "/items") => create_item(out, request),
            (Method::Get, "/health") => respond(out, 200, r#"{"status":"ok"}"#),
            _ => respond(out, 404, r#"{"error":"not found"}"#),
        }
    }
}

fn create_item(out: ResponseOutparam, request: IncomingRequest) {
    let body = match request.consume() {
        Ok(body) => read_body(body),
        Err(()) => Err("request body already taken".to_string()),
    };
    let body = match body {
        Ok(body) => body,
        Err(err) => return respond(out, 500, &error_json(&format!("reading body: {err}"))),
    };
    let item: Value = match serde_json::from_slice(&body) {
        Ok(item) => item,
        Err(err) => return respond(out, 400, &error_json(&format!("invalid JSON: {err}"))),
    };
    let Some(name) = item.get("name").and_then(Value::as_str) else {
        return respond(out, 400, &error_json("expected an object with a string \"name\""));
    };
    let name = Value::from(name).to_string();
    respond(out, 201, &format!(r#"{{"id":2,"name":{name}}}"#));
}

fn error_json(message: &str) -> String {
    format!(r#"{{"error":{}}}"#, Value::from(message))
}

/// Reads an incoming request body to its end.
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

/// Sends a complete `application/json` response.
fn respond(out: ResponseOutparam, status: u16, json: &str) {
    let headers = Fields::from_list(&[
        ("content-type".to_string(), b"application/json".to_vec()),
        ("content-length".to_string(), json.len().to_string().into_bytes()),
    ])
    .expect("valid headers");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("valid status code");
    let response_body = response.body().expect("response body taken once");
    ResponseOutparam::set(out, Ok(response));
    {
        let stream = response_body.write().expect("body stream taken once");
        for chunk in json.as_bytes().chunks(4096) {
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
