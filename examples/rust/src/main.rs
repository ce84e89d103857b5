//! The Rust example of batch-protocol.txt as a program:
//!     cargo run -- recording.wav [ws://localhost:8765] [language]
use serde_json::json;
use std::{env, fs};
use tungstenite::{connect, Message};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = env::args().collect();
    let path = args.get(1).ok_or("usage: speechgw-client FILE.wav [URL] [LANGUAGE]")?;
    let base = args.get(2).map(String::as_str).unwrap_or("ws://localhost:8765");
    let language = args.get(3).map(String::as_str).unwrap_or("en");
    let wav_bytes = fs::read(path)?;

    let (mut ws, _) = connect(format!("{base}/ws/transcribe"))?;
    // Send metadata
    let mut metadata = json!({"type": "transcribe", "language": language});
    if let Ok(key) = env::var("SPEECHGW_API_KEY") {
        metadata["api_key"] = json!(key);
    }
    ws.send(Message::Text(metadata.to_string()))?;
    // Send WAV audio
    ws.send(Message::Binary(wav_bytes))?;
    // Receive result
    let result: serde_json::Value = serde_json::from_str(ws.read()?.to_text()?)?;
    if let Some(error) = result.get("error") {
        return Err(format!("{}: {}", error, result["message"]).into());
    }
    let text = result["postprocessed_text"].as_str().or(result["text"].as_str()).unwrap_or("");
    println!("{text}");
    Ok(())
}
