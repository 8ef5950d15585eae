"""best_of_n_sft: sample n answers per prompt, keep the best, fine-tune on it.

A complete alignment algorithm on rlhfx's shared loop: the loop samples, cleans, scores,
evaluates, checkpoints, logs and saves; this module says only what makes the algorithm.
"""

from pydantic import Field

from rlhfx import AlgorithmConfig, AlignmentAlgorithm, hookimpl


class BestOfNConfig(AlgorithmConfig):
    #: answers sampled per prompt; the best one is trained on
    n: int = Field(default=4, ge=2)
    #: prompts per iteration (over all processes)
    prompts: int = Field(default=8, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    #: passes over the chosen answers per iteration
    epochs: int = Field(default=1, ge=1)


class BestOfNSupervised(AlignmentAlgorithm[BestOfNConfig]):
    """Fine-tune on the best of n sampled answers of each prompt, iteration after iteration."""

    name = "best_of_n_sft"

    def prompts_per_iteration(self):
        return self.config.prompts

    def samples_per_prompt(self):
        return self.config.n

    def setup(self, setup):
        import torch

        self.run = setup
        self.policy = setup.load_policy()  # float32 weights; LoRA when the recipe asks
        trainable = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=self.config.learning_rate)

    def update(self, batch):
        import torch

        # Every process sees every sample and makes the same choice, then trains on the same
        # answers, so the processes' weights stay equal without exchanging gradients.
        chosen = []
        for group in batch.groups():
            usable = [s for s in group if batch.usable(s) and s.response_ids
                      and s.token_status != "prefix"]  # tokens a cleaner cut off the front
            if usable:
                chosen.append(max(usable, key=lambda s: s.reward))
        losses = []
        self.policy.train()
        for _ in range(self.config.epochs):
            for sample in chosen:
                ids = torch.tensor([sample.prompt_ids + sample.response_ids],
                                   device=self.run.device)
                labels = ids.clone()
                labels[0, : len(sample.prompt_ids)] = -100  # learn the answer, not the prompt
                with self.run.autocast():
                    loss = self.policy(input_ids=ids, labels=labels).loss
                loss.backward()
                self.optimizer.step()
                self.optimizer.zero_grad()
                losses.append(loss.item())
        self.policy.eval()
        for sample in chosen:
            sample.trained = True  # the samples file and `trained_reward_mean` show them
        return {
            "train_loss": sum(losses) / len(losses) if losses else None,
            "prompts_without_answer": batch.num_prompts - len(chosen),  # best_of_n_sft/...
        }

    def state_dict(self):  # the optimizer too, so a resumed run continues exactly
        return {**super().state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])


@hookimpl
def rlhfx_register_algorithms(register):
    register(BestOfNSupervised)
