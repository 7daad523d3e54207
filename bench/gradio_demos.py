"""The two demos of Gradio's State guide, served by Gradio for `bench/compare_gradio.py`.

Global state: the guide's score tracker, a `gr.Interface` over a module-level list. Session state:
the guide's chatbot as its streaming example wires it, a `gr.Blocks` with a `gr.Chatbot`, a
`gr.Textbox` and a clear button: `msg.submit(user, ..., queue=False).then(bot, ...)`, where `bot` is
a generator that streams the reply of the model hxstate ships, with the prompt and the generation
settings of hxstate's defaults (DialoGPT turns joined by the eos token, greedy decoding), so that
both servers do the same work and both stream. Both demos run in one Gradio app, as hxstate serves both pages from one
process. Runs in `.venv-bench` (requirements-bench.txt); the app never needs Gradio.

    .venv-bench/bin/python bench/gradio_demos.py --port 7860 [--model models/hxstate-chat]
"""

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

MODEL = Path(__file__).resolve().parent.parent / "models" / "hxstate-chat"
# hxstate's defaults (webapp/__init__.py: CHAT_MAX_NEW_TOKENS; decoding from the model's own
# generation_config.json, which `generate` reads as the app does), so that a reply costs the same
# work in both servers.
GENERATION = dict(max_new_tokens=40)


def load(model_folder):
    """The tokenizer and the model, from a local folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_folder)
    return tokenizer, AutoModelForCausalLM.from_pretrained(model_folder).eval()


def prompt_ids(tokenizer, context_size, texts):
    """DialoGPT's prompt as hxstate builds it: every turn followed by eos, the oldest turns dropped
    so that the prompt and the reply fit the context window."""
    budget = context_size - GENERATION["max_new_tokens"]
    kept = []
    for text in reversed(texts):
        ids = tokenizer.encode(text) + [tokenizer.eos_token_id]
        if len(ids) > budget - len(kept):
            if not kept:
                kept = ids[-budget:]
            break
        kept = ids + kept
    return kept


# The guide's global-state example, as written there: a module-level list every visitor shares.
scores = []


def track_score(score):
    scores.append(score)
    top_scores = sorted(scores, reverse=True)[:3]
    return top_scores


def score_demo():
    """The guide's score tracker: a number in, the top scores out as JSON."""
    import gradio as gr

    return gr.Interface(track_score, gr.Number(label="Score"), gr.JSON(label="Top Scores"))


def stream(tokenizer, model, texts):
    """The reply to the conversation `texts`, piece by piece as the model writes it (transformers'
    TextIteratorStreamer, with `generate` in a thread, as the guide's streaming chatbots do)."""
    import threading

    import torch
    from transformers import TextIteratorStreamer

    ids = prompt_ids(tokenizer, model.config.n_positions, texts)
    input_ids = torch.tensor([ids])
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)

    def run():
        with torch.inference_mode():
            model.generate(input_ids, attention_mask=torch.ones_like(input_ids), streamer=streamer,
                           pad_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                           **GENERATION)

    thread = threading.Thread(target=run)
    thread.start()
    yield from streamer
    thread.join()


def chat_demo(model_folder):
    """The guide's session-state chatbot wired as its streaming example: `user` adds the message
    without the queue, then `bot`, a generator, streams the model's reply into the history."""
    import gradio as gr

    tokenizer, model = load(model_folder)

    def text_of(message):
        content = message["content"]
        if isinstance(content, str):
            return content
        return "".join(part.get("text", "") for part in content)

    def user(user_message, history):
        return "", history + [{"role": "user", "content": user_message}]

    def bot(history):
        texts = [text_of(turn) for turn in history]
        history.append({"role": "assistant", "content": ""})
        for piece in stream(tokenizer, model, texts):
            if piece:
                history[-1]["content"] += piece
                yield history
        history[-1]["content"] = history[-1]["content"].strip()  # as hxstate stores a reply
        yield history

    with gr.Blocks() as demo:
        chatbot = gr.Chatbot()
        msg = gr.Textbox()
        clear = gr.Button("Clear")
        msg.submit(user, [msg, chatbot], [msg, chatbot], queue=False).then(bot, chatbot, chatbot)
        clear.click(lambda: None, None, chatbot, queue=False)
    return demo


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--model", default=str(MODEL))
    args = parser.parse_args()
    import gradio as gr

    demo = gr.TabbedInterface([score_demo(), chat_demo(args.model)], ["Scores", "Chat"])
    demo.launch(server_name="127.0.0.1", server_port=args.port, show_error=True)


if __name__ == "__main__":
    main()
