import Foundation

// JSONSerialization's values, read strictly: on Linux a JSON 0 or 1 also casts to Bool, and true/false to a number.

/// True for JSON `true` and `false`. JSONSerialization returns them as `NSNumber`s whose `objCType` is "c" (a
/// char), which no JSON number is; `value is Bool` is not the test, as it also holds for the numbers 0 and 1.
func isJSONBoolean(_ value: Any) -> Bool {
    guard let number = value as? NSNumber else { return false }
    return String(cString: number.objCType) == "c"
}

/// A JSON number (never a boolean) as `Double`.
func jsonNumber(_ value: Any?) -> Double? {
    guard let value, !isJSONBoolean(value), let number = value as? NSNumber else { return nil }
    return number.doubleValue
}

/// A JSON integer (never a boolean, never a number written with a fraction or exponent) as `Int`.
func jsonInteger(_ value: Any?) -> Int? {
    guard let value, !isJSONBoolean(value), let number = value as? NSNumber,
          !["d", "f"].contains(String(cString: number.objCType)) else { return nil }
    return value as? Int
}

/// A JSON `true` or `false` (never a number) as `Bool`.
func jsonBoolean(_ value: Any?) -> Bool? {
    guard let value, isJSONBoolean(value) else { return nil }
    return (value as? NSNumber)?.boolValue
}
