"""The teacher models behind step 2 and evaluate.py's judge, behind one interface (base.py), one module each:

    gemini             Gemini's online API through google-genai (the default)
    gemini_batch       Gemini's Batch API: half the price, answers from jobs; the protocol and its journal
    openai_compatible  any OpenAI-compatible chat completions server: vLLM, llama.cpp, Ollama, LM Studio, OpenAI
    local_mlx          a local model in this process through mlx_lm, constrained to the schema by llguidance

A new teacher is one module with one Teacher subclass, added to TEACHERS below, and its tests.
"""

from paper_personas.teachers.base import Teacher, TeacherOptions
from paper_personas.teachers.gemini import GeminiTeacher
from paper_personas.teachers.gemini_batch import GeminiBatchTeacher
from paper_personas.teachers.local_mlx import MLXTeacher
from paper_personas.teachers.openai_compatible import OpenAITeacher

TEACHERS = {teacher.name: teacher for teacher in (GeminiTeacher, GeminiBatchTeacher, OpenAITeacher, MLXTeacher)}
ASKING_TEACHERS = sorted(name for name, teacher in TEACHERS.items() if not teacher.batch)  # what a judge can use


def make_teacher(name: str, options: TeacherOptions) -> Teacher:
    return TEACHERS[name](options)
