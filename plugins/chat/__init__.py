"""`rlhfx chat MODEL`: talk to a model in the terminal (streamed answers, `/reset`, `/quit`),
or ask one question with `-p "..."` and print the answer.

Only click is imported here: every `rlhfx` command loads this module at start-up.
"""

from __future__ import annotations

import sys

import click

from rlhfx import hookimpl

HELP = "/reset starts a new conversation, /quit (or Ctrl-D) leaves."


def _interactive(session, console) -> None:
    from rich.prompt import Prompt

    mode = "its chat template" if session.uses_template else "plain text continuation"
    console.print(f"[dim]chatting with {mode}; {HELP}[/dim]", highlight=False)
    while True:
        try:
            text = Prompt.ask("[bold cyan]you[/bold cyan]", console=console)
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        command = text.strip().lower()
        if command in ("/quit", "/exit", "/q"):
            return
        if command == "/reset":
            session.reset()
            console.print("[dim]new conversation[/dim]")
            continue
        if command in ("/help", "/?"):
            console.print(f"[dim]{HELP}[/dim]")
            continue
        if not text.strip():
            continue
        console.print("[bold green]model[/bold green]: ", end="")
        try:
            for piece in session.stream(text):
                console.out(piece, end="", highlight=False)
        except KeyboardInterrupt:
            session.interrupt()
            console.print(" [dim](stopped; the turn is not kept)[/dim]", end="")
        console.print()


@hookimpl
def rlhfx_register_commands(cli):
    from rlhfx.cli import user_errors

    @cli.command("chat")
    @click.argument("model")
    @click.option("--prompt", "-p", default=None,
                  help="Ask this once, print the answer and exit.")
    @click.option("--system", default=None, help="A system message (chat templates).")
    @click.option("--temperature", type=click.FloatRange(min=0), default=0.7, show_default=True,
                  help="0 = greedy.")
    @click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=0.9,
                  show_default=True)
    @click.option("--max-new-tokens", type=click.IntRange(min=1), default=256,
                  show_default=True)
    @click.option("--seed", type=int, default=None, help="Fix sampling (repeatable answers).")
    @click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                  show_default=True)
    @click.option("--show-prompt", is_flag=True,
                  help="Print the exact text the model is given (to stderr) before answering.")
    @user_errors
    def chat_cmd(model: str, prompt: str | None, system: str | None, temperature: float,
                 top_p: float, max_new_tokens: int, seed: int | None, device: str,
                 show_prompt: bool) -> None:
        """Chat with MODEL (a run directory, model directory, hub id, pkg:..., builtin:...).

        Uses the model's chat template when it has one, else continues plain text.
        """
        from rich.console import Console

        from rlhfx.plugins.evaluate.sources import resolve_model
        from rlhfx.runner import pick_device

        from .session import ChatSettings, load_session

        settings = ChatSettings(max_new_tokens=max_new_tokens, temperature=temperature,
                                top_p=top_p, system=system, device=pick_device(device, "--device"))
        if seed is not None:
            import torch

            torch.manual_seed(seed)
        session = load_session(resolve_model(model), settings)
        if show_prompt:
            session_prompt = session.prompt_for
            err = Console(stderr=True)

            def shown(text: str) -> str:
                out = session_prompt(text)
                err.print(f"[dim]prompt:[/dim] {out!r}", highlight=False, soft_wrap=True)
                return out

            session.prompt_for = shown  # type: ignore[method-assign]
        if prompt is not None:
            for piece in session.stream(prompt):
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
            return
        _interactive(session, Console())
