"""The teacher models behind step 2 and evaluate.py's judge, behind one interface (base.py), one module each:

    gemini             Gemini's online API through google-genai (the default)
    gemini_batch       not a teacher: the Gemini teacher's requests as Batch API jobs, half the price
    openai_compatible  any OpenAI-compatible chat completions server: vLLM, llama.cpp, Ollama, LM Studio, OpenAI
    local_mlx          a local model in this process through mlx_lm, constrained to the schema by llguidance

A new teacher is one module with one Teacher subclass, added to TEACHERS below, and its tests.
"""

from paper_personas.teachers.base import Teacher, TeacherOptions
from paper_personas.teachers.gemini import GeminiTeacher
from paper_personas.teachers.local_mlx import MLXTeacher
from paper_personas.teachers.openai_compatible import OpenAITeacher

TEACHERS = {teacher.name: teacher for teacher in (GeminiTeacher, OpenAITeacher, MLXTeacher)}


def make_teacher(name: str, options: TeacherOptions) -> Teacher:
    return TEACHERS[name](options)
