import EngineCore
